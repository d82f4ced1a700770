/**
 * When a batcher sends: at once when a batch is full; when nothing is in
 * flight, once the event loop has run this turn's I/O callbacks
 * (`setImmediate`), so requests read from many sockets in one turn share a
 * batch and an idle server waits for no timer; otherwise after `windowMs`,
 * so load fills batches. Ordering between a key's reads and writes is not
 * this scheduler's concern: OrderedStore holds a write until the reads
 * issued before it have finished.
 */
export class FlushScheduler {
  #scheduled = false;
  #timer: Timer | undefined;

  constructor(
    private readonly windowMs: number,
    private readonly flush: (partial: boolean) => void,
  ) {}

  /**
   * Call when a batch settles with work still queued: full batches go at
   * once, and a partial one that is already waiting out its window keeps
   * waiting (its requests came while batches were in flight, and the
   * clients just answered are about to send more) rather than go at the
   * end of the turn with a few items.
   */
  afterBatch(ready: number, full: number, inFlight: number): void {
    if (ready >= full || this.#timer === undefined) this.schedule(ready, full, inFlight);
  }

  /** Call after queueing work: `ready` items can be sent, `full` make a batch, `inFlight` batches are out. */
  schedule(ready: number, full: number, inFlight: number): void {
    if (ready >= full) {
      this.flush(false);
    } else if (inFlight === 0 || this.windowMs === 0) {
      if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(() => {
          this.#scheduled = false;
          this.flush(true);
        });
      }
    } else {
      this.#timer ??= setTimeout(() => {
        this.#timer = undefined;
        this.flush(true);
      }, this.windowMs);
    }
  }
}
