/** What a connection is given and bounded by: its socket's contract and its limits. */
import type { ByteBudget } from "./byte-budget.js";
import type { InFlightShare } from "./in-flight-share.js";

/** The part of a Bun socket a connection drives. */
export interface ConnectionSocket {
  write(data: Uint8Array): number;
  pause(): void;
  resume(): void;
  end(): void;
  /** Closes at once, sending nothing more. */
  terminate(): void;
  readonly remoteAddress: string;
}

/** Per-connection limits. */
export interface ConnectionOptions {
  maxFrameBytes: number;
  /** Requests read but not yet answered; at this many, no further frame is taken. */
  maxInFlight: number;
  /** Unsent response bytes; past this no further frame is taken until `drain`. */
  highWaterBytes: number;
  /** Shared by every connection of a server: bytes held across them all. */
  budget?: ByteBudget;
  /** Shared by every connection of a listener: requests in flight across them all. */
  share?: InFlightShare;
}

/** Frames at least this long are counted against the byte budget until answered. */
export const BUDGETED_FRAME_BYTES = 64 * 1024;

/**
 * Frames a connection takes from its reads before it lets the event loop
 * serve other sockets: a read can hold tens of thousands of small frames,
 * and answering them all at once would keep every other connection waiting.
 */
export const FRAMES_PER_TURN = 512;
