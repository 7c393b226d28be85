/**
 * A TCP relay on 127.0.0.1 (port 0) in front of a loopback service, for fault injection at the connection level:
 * count connections, refuse some (reset at once), leave some unanswered, or cut every live connection.
 */
import net, { type AddressInfo } from 'node:net'

export type ConnectionFault = 'reset' | 'hang' | undefined

export interface TcpProxy {
  port: number
  /** Where new connections are relayed to (may be changed between connections). */
  targetPort: number
  /** Connections accepted so far. */
  connections: () => number
  /** Decides per new connection (numbered from 1): reset, hang, or relay (undefined). */
  fault: ((n: number) => ConnectionFault) | undefined
  /** Cuts every live connection (both sides). */
  dropAll: () => void
  close: () => Promise<void>
}

export async function startTcpProxy (targetPort: number, targetHost = '127.0.0.1'): Promise<TcpProxy> {
  let count = 0
  const live = new Set<net.Socket>()
  const server = net.createServer((client) => {
    count++
    live.add(client)
    client.on('close', () => live.delete(client))
    client.on('error', () => {})
    const fault = proxy.fault?.(count)
    if (fault === 'reset') { client.resetAndDestroy(); return }
    if (fault === 'hang') return
    const upstream = net.connect(proxy.targetPort, targetHost)
    live.add(upstream)
    upstream.on('close', () => { live.delete(upstream); client.destroy() })
    upstream.on('error', () => client.destroy())
    client.on('close', () => upstream.destroy())
    upstream.setNoDelay(true)
    client.setNoDelay(true)
    client.pipe(upstream)
    upstream.pipe(client)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const proxy: TcpProxy = {
    port: (server.address() as AddressInfo).port,
    targetPort,
    connections: () => count,
    fault: undefined,
    dropAll: () => { for (const socket of live) socket.destroy() },
    close: async () => {
      for (const socket of live) socket.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
  return proxy
}
