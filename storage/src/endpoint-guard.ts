import dns from 'node:dns'
import http from 'node:http'
import https from 'node:https'
import { BlockList, isIP, type LookupFunction } from 'node:net'
import { CloudPilotError } from '@cloudpilot/protocol'

/**
 * SSRF guard for destination endpoints (DESIGN.md §6). A destination's endpoint is user input that the agent and
 * the coordinator connect to, so it must not be able to reach a cloud metadata service or, unless the operator
 * allows it, the machine itself or its private network.
 *
 * - link-local (169.254/16, fe80::/10: instance metadata lives there), unspecified, multicast and reserved
 *   addresses and the known metadata addresses outside link-local are always refused;
 * - loopback, RFC 1918, CGNAT and unique-local IPv6 only with `allowPrivate`.
 *
 * Literal addresses are checked when the driver is built (`checkEndpointHost`); names are checked on every
 * connection by the agents' `lookup` (`guardedAgents`), so a name that later resolves elsewhere (DNS rebinding)
 * is refused as well.
 */

const ALWAYS = new BlockList()
ALWAYS.addSubnet('0.0.0.0', 8, 'ipv4')
ALWAYS.addSubnet('169.254.0.0', 16, 'ipv4')
ALWAYS.addSubnet('224.0.0.0', 4, 'ipv4')
ALWAYS.addSubnet('240.0.0.0', 4, 'ipv4')
ALWAYS.addAddress('100.100.100.200', 'ipv4') // Alibaba Cloud metadata (inside CGNAT space)
ALWAYS.addAddress('::', 'ipv6')
ALWAYS.addSubnet('fe80::', 10, 'ipv6')
ALWAYS.addSubnet('ff00::', 8, 'ipv6')
ALWAYS.addAddress('fd00:ec2::254', 'ipv6') // AWS instance metadata over IPv6 (inside unique-local space)

const PRIVATE = new BlockList()
PRIVATE.addSubnet('127.0.0.0', 8, 'ipv4')
PRIVATE.addSubnet('10.0.0.0', 8, 'ipv4')
PRIVATE.addSubnet('172.16.0.0', 12, 'ipv4')
PRIVATE.addSubnet('192.168.0.0', 16, 'ipv4')
PRIVATE.addSubnet('100.64.0.0', 10, 'ipv4')
PRIVATE.addSubnet('198.18.0.0', 15, 'ipv4')
PRIVATE.addAddress('::1', 'ipv6')
PRIVATE.addSubnet('fc00::', 7, 'ipv6')

/** IPv4-mapped IPv6 (`::ffff:1.2.3.4` or `::ffff:102:304`) as the IPv4 address it stands for. */
function unmapped (address: string): { address: string, family: 'ipv4' | 'ipv6' } {
  const lower = address.toLowerCase()
  const dotted = /^(?:0{0,4}:){0,5}:?ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(lower)
  if (dotted?.[1] !== undefined) return { address: dotted[1], family: 'ipv4' }
  const hex = /^(?:0{0,4}:){0,5}:?ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(lower)
  if (hex?.[1] !== undefined && hex[2] !== undefined) {
    const hi = parseInt(hex[1], 16)
    const lo = parseInt(hex[2], 16)
    return { address: `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`, family: 'ipv4' }
  }
  return { address: lower, family: isIP(lower) === 4 ? 'ipv4' : 'ipv6' }
}

/** Why an IP address may not be connected to, or undefined when it may. */
export function addressRefusal (address: string, allowPrivate: boolean): string | undefined {
  const a = unmapped(address)
  if (ALWAYS.check(a.address, a.family)) return `${address} is a link-local, metadata or reserved address`
  if (!allowPrivate && PRIVATE.check(a.address, a.family)) return `${address} is a loopback or private address`
  return undefined
}

function refused (host: string, reason: string): CloudPilotError {
  return new CloudPilotError('ENDPOINT_NOT_ALLOWED', `endpoint ${host} refused: ${reason}`)
}

/** Checks an endpoint host as written in the configuration (an IP literal is checked here, a name on connect). */
export function checkEndpointHost (host: string, allowPrivate: boolean): void {
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host
  if (isIP(bare) !== 0) {
    const reason = addressRefusal(bare, allowPrivate)
    if (reason !== undefined) throw refused(host, reason)
  }
}

/** A `lookup` for sockets that refuses addresses the guard does not allow. */
export function guardedLookup (allowPrivate: boolean): LookupFunction {
  return (hostname, options, callback) => {
    dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err !== null) { callback(err, '', 0); return }
      for (const entry of addresses) {
        const reason = addressRefusal(entry.address, allowPrivate)
        if (reason !== undefined) { callback(refused(hostname, reason) as unknown as NodeJS.ErrnoException, '', 0); return }
      }
      const first = addresses[0]
      if (options.all === true) callback(null, addresses)
      else if (first === undefined) callback(Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' }), '', 0)
      else callback(null, first.address, first.family)
    })
  }
}

/**
 * Keep-alive http and https agents whose connections go through the guard. Pass them as instances (not agent
 * options) so that every request uses them.
 */
export function guardedAgents (allowPrivate: boolean, maxSockets = 16): { httpAgent: http.Agent, httpsAgent: https.Agent } {
  const lookup = guardedLookup(allowPrivate)
  return {
    httpAgent: new http.Agent({ keepAlive: true, maxSockets, lookup }),
    httpsAgent: new https.Agent({ keepAlive: true, maxSockets, lookup }),
  }
}
