/**
 * ustar headers (with a pax extended header for what ustar cannot hold: long or non-ASCII names and link
 * targets, ids and times out of range), byte for byte as tar-stream's pack writes them, so a files archive
 * written here and one written through tar-stream read the same with GNU tar and with tar-stream's extract.
 */

export type TarEntryType = 'file' | 'link' | 'symlink' | 'directory' | 'character-device' | 'block-device' | 'fifo'

export interface TarHeader {
  /** Entry name; a directory's ends with `/`. */
  name: string
  type: TarEntryType
  mode: number
  uid: number
  gid: number
  /** Seconds since the epoch (already floored). */
  mtime: number
  size: number
  linkname?: string
  devmajor?: number
  devminor?: number
  /** Extra pax records (uid, gid, mtime out of ustar range). */
  pax?: Record<string, string>
}

export const BLOCK = 512
/** Two zero blocks end an archive. */
export const END_OF_ARCHIVE = Buffer.alloc(2 * BLOCK)

const TYPEFLAG: Record<TarEntryType | 'pax-header', number> = {
  file: 0, link: 1, symlink: 2, 'character-device': 3, 'block-device': 4, directory: 5, fifo: 6, 'pax-header': 72,
}
const ZERO_OFFSET = '0'.charCodeAt(0)
const USTAR = Buffer.from('ustar\x0000', 'binary')

/** Bytes of padding after a body of `size` bytes. */
export function padding (size: number): number {
  const rest = size % BLOCK
  return rest === 0 ? 0 : BLOCK - rest
}

/** Total bytes that `encodeHeader(header)` writes (headers, pax body and its padding); the entry body follows. */
export function headerBytes (header: TarHeader): number {
  const pax = paxRecords(header)
  return pax === null ? BLOCK : 2 * BLOCK + Buffer.byteLength(pax) + padding(Buffer.byteLength(pax))
}

/** Writes the header block(s) of `header` into `out` at `offset` (zeroed space of headerBytes()); returns the new offset. */
export function encodeHeader (header: TarHeader, out: Buffer, offset: number): number {
  const pax = paxRecords(header)
  if (pax === null) {
    writeUstar(header, header.name, header.linkname, out, offset)
    return offset + BLOCK
  }
  const paxBody = Buffer.from(pax)
  const linkname = header.linkname === undefined || header.linkname === '' ? undefined : 'PaxHeader'
  writeUstar({ ...header, type: 'file', size: paxBody.length }, 'PaxHeader', linkname, out, offset, 'pax-header')
  offset += BLOCK
  paxBody.copy(out, offset)
  offset += paxBody.length + padding(paxBody.length)
  writeUstar(header, 'PaxHeader', linkname, out, offset)
  return offset + BLOCK
}

/** The pax records of a header, or null when a plain ustar header holds it. */
function paxRecords (header: TarHeader): string | null {
  if (header.pax === undefined && fitsUstar(header)) return null
  let result = paxRecord('path', header.name)
  if (header.linkname !== undefined && header.linkname !== '') result += paxRecord('linkpath', header.linkname)
  for (const [key, value] of Object.entries(header.pax ?? {})) result += paxRecord(key, value)
  return result
}

function paxRecord (key: string, value: string): string {
  const line = ` ${key}=${value}\n`
  const len = Buffer.byteLength(line)
  let digits = Math.floor(Math.log10(len)) + 1
  if (len + digits >= 10 ** digits) digits++
  return `${len + digits}${line}`
}

function fitsUstar (header: TarHeader): boolean {
  return splitName(header.name) !== null && (header.linkname === undefined || Buffer.byteLength(header.linkname) <= 100)
}

/** ustar name/prefix split of an ASCII name, or null when it does not fit. */
function splitName (full: string): { name: string, prefix: string } | null {
  if (Buffer.byteLength(full) !== full.length) return null
  let name = full
  let prefix = ''
  while (name.length > 100) {
    const i = name.indexOf('/')
    if (i === -1) return null
    prefix += prefix !== '' ? '/' + name.slice(0, i) : name.slice(0, i)
    name = name.slice(i + 1)
  }
  if (name.length > 100 || prefix.length > 155) return null
  return { name, prefix }
}

function writeUstar (header: TarHeader, fullName: string, linkname: string | undefined, out: Buffer, at: number, type: TarEntryType | 'pax-header' = header.type): void {
  const split = splitName(fullName) ?? { name: fullName.slice(0, 100), prefix: '' }
  out.write(split.name, at, 100, 'utf8')
  out.write(octal(header.mode & 0o7777, 6), at + 100, 'latin1')
  out.write(octal(header.uid, 6), at + 108, 'latin1')
  out.write(octal(header.gid, 6), at + 116, 'latin1')
  writeSize(header.size, out, at + 124)
  out.write(octal(header.mtime | 0, 11), at + 136, 'latin1')
  out[at + 156] = ZERO_OFFSET + TYPEFLAG[type]
  if (linkname !== undefined && linkname !== '') out.write(linkname, at + 157, 100, 'utf8')
  USTAR.copy(out, at + 257)
  out.write(octal(header.devmajor ?? 0, 6), at + 329, 'latin1')
  out.write(octal(header.devminor ?? 0, 6), at + 337, 'latin1')
  if (split.prefix !== '') out.write(split.prefix, at + 345, 155, 'utf8')
  let sum = 8 * 32
  for (let i = at; i < at + 148; i++) sum += out[i] as number
  for (let i = at + 156; i < at + BLOCK; i++) sum += out[i] as number
  out.write(octal(sum, 6), at + 148, 'latin1')
}

/** `n` octal digits and a space (all 7s when the value does not fit, as tar-stream does). */
function octal (value: number, n: number): string {
  const digits = value.toString(8)
  if (digits.length > n) return '7'.repeat(n) + ' '
  return '0'.repeat(n - digits.length) + digits + ' '
}

/** 11 octal digits, or base-256 (GNU) for sizes of 8 GiB and more. */
function writeSize (size: number, out: Buffer, at: number): void {
  if (size <= 0o77777777777) {
    out.write(octal(size, 11), at, 'latin1')
    return
  }
  out[at] = 0x80
  let rest = size
  for (let i = 11; i > 0; i--) {
    out[at + i] = rest & 0xff
    rest = Math.floor(rest / 0x100)
  }
}
