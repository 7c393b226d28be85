/** CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as GCS reports it in `crc32c` and x-goog-hash. */
const TABLE = (() => {
  const table = new Uint32Array(256)
  for (let n = 0; n < 256; n++) {
    let c = n
    for (let k = 0; k < 8; k++) c = (c & 1) !== 0 ? 0x82F63B78 ^ (c >>> 1) : c >>> 1
    table[n] = c >>> 0
  }
  return table
})()

export function crc32c (data: Buffer, previous = 0): number {
  let crc = (previous ^ 0xFFFFFFFF) >>> 0
  for (let i = 0; i < data.length; i++) crc = (TABLE[(crc ^ (data[i] as number)) & 0xFF] as number) ^ (crc >>> 8)
  return (crc ^ 0xFFFFFFFF) >>> 0
}

/** Big-endian 4 bytes, base64: GCS's encoding of a CRC-32C. */
export function crc32cBase64 (data: Buffer): string {
  const out = Buffer.alloc(4)
  out.writeUInt32BE(crc32c(data))
  return out.toString('base64')
}
