import { Writable } from 'node:stream'

export interface TeeSink {
  stream: Writable
  /** Maps an error of this sink (e.g. ENOSPC of the spool file to NO_SPACE). */
  mapError?: (err: unknown) => Error
  /** Wait for 'close' (not just 'finish') before the tee finishes: a file is flushed and closed. */
  awaitClose?: boolean
}

/**
 * Fan-out writable: every chunk goes to every sink, and the next chunk is accepted only once every sink has
 * taken this one (write() returned true, or 'drain'). The slowest sink sets the pace; nothing accumulates beyond
 * each sink's own high-water mark. A sink's error destroys the tee (and with it the pipeline); destroying the
 * tee destroys every sink with the same error.
 */
export class Tee extends Writable {
  private readonly sinks: TeeSink[]

  constructor (sinks: TeeSink[], options: { highWaterMark?: number } = {}) {
    super(options.highWaterMark === undefined ? {} : { highWaterMark: options.highWaterMark })
    this.sinks = sinks
    for (const sink of sinks) {
      sink.stream.on('error', (err) => {
        if (!this.destroyed) this.destroy(this.mapped(sink, err))
      })
    }
  }

  override _write (chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    const waits: Array<Promise<void>> = []
    for (const sink of this.sinks) {
      if (!sink.stream.write(chunk)) waits.push(this.waitFor(sink, 'drain'))
    }
    if (waits.length === 0) callback()
    else Promise.all(waits).then(() => { callback() }, callback)
  }

  override _final (callback: (error?: Error | null) => void): void {
    const waits = this.sinks.map(async (sink) => {
      const done = this.waitFor(sink, sink.awaitClose === true ? 'close' : 'finish')
      sink.stream.end()
      await done
    })
    Promise.all(waits).then(() => { callback() }, callback)
  }

  override _destroy (error: Error | null, callback: (error?: Error | null) => void): void {
    for (const sink of this.sinks) {
      if (sink.stream.destroyed) continue
      // After a clean finish (autoDestroy) a sink such as an upload's PassThrough may still hold bytes its
      // reader has not taken yet: leave it alone. Only an error, or an end before finishing, tears sinks down.
      if (error !== null) sink.stream.destroy(error)
      else if (!sink.stream.writableFinished) sink.stream.destroy(new Error('tee destroyed before it finished'))
    }
    callback(error)
  }

  /** Resolves on `event`; rejects when the sink errors or closes first (a destroyed sink never drains). */
  private async waitFor (sink: TeeSink, event: 'drain' | 'finish' | 'close'): Promise<void> {
    const stream = sink.stream
    if (event === 'finish' && stream.writableFinished) return
    if (event === 'close' && stream.closed) {
      if (stream.errored !== null) throw this.mapped(sink, stream.errored)
      return
    }
    if (stream.destroyed && event !== 'close') throw this.mapped(sink, stream.errored ?? new Error('sink destroyed'))
    await new Promise<void>((resolve, reject) => {
      const cleanup = (): void => {
        stream.off(event, onEvent)
        stream.off('error', onError)
        if (event !== 'close') stream.off('close', onClose)
      }
      const onEvent = (): void => {
        cleanup()
        if (event === 'close' && stream.errored !== null) reject(this.mapped(sink, stream.errored))
        else resolve()
      }
      const onError = (err: unknown): void => { cleanup(); reject(this.mapped(sink, err)) }
      const onClose = (): void => { cleanup(); reject(this.mapped(sink, stream.errored ?? new Error('sink closed before it finished'))) }
      stream.once(event, onEvent)
      stream.once('error', onError)
      if (event !== 'close') stream.once('close', onClose)
    })
  }

  private mapped (sink: TeeSink, err: unknown): Error {
    return sink.mapError === undefined ? (err instanceof Error ? err : new Error(String(err))) : sink.mapError(err)
  }
}
