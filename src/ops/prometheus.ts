import { collectDefaultMetrics, Gauge, Counter as PromCounter, Registry } from "prom-client";
import { Counter, type Counters } from "../metrics.js";
import { FRONT_ENDS, type FrontEnd, LATENCY_BUCKETS, OPS, RESULTS, type RequestStats } from "./request-stats.js";

/** What the metrics are read from, at scrape time. */
export interface MetricSources {
  /** Each front end's requests. */
  stats: Readonly<Record<FrontEnd, RequestStats>>;
  counters: Counters;
  /** Open connections. */
  connections(): number;
  /** Requests read and not yet answered. */
  inFlight(): number;
  /** Data-key cache hits and misses, when the store encrypts. */
  keyCache?: () => { hits: number; misses: number };
  /** The active branch-key version (0 before one is known) and rotations this process made, on the DynamoDB store. */
  branchKey?: () => { version: number; rotations: number };
  /** Requests waiting in the DynamoDB batchers and batches in flight, on the DynamoDB store. */
  batchQueues?: () => { write: { queued: number; inFlight: number }; read: { queued: number; inFlight: number } };
  /** When the served TLS certificate expires, when the server serves TLS. */
  tlsNotAfter?: () => Date;
  /** The byte budget shared by the server's connections. */
  budget?: () => { readonly used: number; readonly limit: number };
}

/** The backend calls kept in {@link Counters}, as service and operation labels. */
const BACKEND_CALLS = Object.values(Counter)
  .filter((c) => c.startsWith("dynamodb.") || c.startsWith("kms."))
  .map((c) => ({ name: c, service: c.slice(0, c.indexOf(".")), operation: c.slice(c.indexOf(".") + 1) }));

/**
 * A Prometheus registry over the server's own counters: prom-client's
 * process metrics (CPU, memory, event-loop lag, GC) plus the service's,
 * read from plain counters when scraped, so the request path never touches
 * a label map. Request latency is a histogram written by hand from
 * {@link RequestStats}, which prom-client cannot take precomputed.
 */
export class Metrics {
  readonly #registry = new Registry();
  readonly #sources: MetricSources;

  constructor(sources: MetricSources) {
    this.#sources = sources;
    const registers = [this.#registry];
    collectDefaultMetrics({ register: this.#registry, prefix: "kvs_" });
    new PromCounter({
      name: "kvs_requests_total",
      help: "Requests answered, by front end (tcp, http), op and result (ok, not_found, internal, refused, conflict)",
      labelNames: ["front_end", "op", "result"],
      registers,
      collect() {
        this.reset();
        for (const front_end of FRONT_ENDS) {
          for (const op of OPS) {
            for (const result of RESULTS) {
              const n = sources.stats[front_end].countOf(op, result);
              if (n > 0) this.inc({ front_end, op, result }, n);
            }
          }
        }
      },
    });
    new Gauge({
      name: "kvs_connections",
      help: "Open client connections",
      registers,
      collect() {
        this.set(sources.connections());
      },
    });
    new Gauge({
      name: "kvs_requests_in_flight",
      help: "Requests read and not yet answered",
      registers,
      collect() {
        this.set(sources.inFlight());
      },
    });
    new PromCounter({
      name: "kvs_backend_calls_total",
      help: "Calls made to DynamoDB and KMS, by service and operation (retries included)",
      labelNames: ["service", "operation"],
      registers,
      collect() {
        this.reset();
        for (const c of BACKEND_CALLS)
          this.inc({ service: c.service, operation: c.operation }, sources.counters.get(c.name));
      },
    });
    new PromCounter({
      name: "kvs_backend_failures_total",
      help: "Failed DynamoDB and KMS calls by operation and kind (throttle, error: 5xx, 4xx, network, timeout)",
      labelNames: ["service", "operation", "kind"],
      registers,
      collect() {
        this.reset();
        for (const o of sources.counters.outcomes()) {
          if (o.kind !== "retry") this.inc({ service: o.service, operation: o.operation, kind: o.kind }, o.count);
        }
      },
    });
    new PromCounter({
      name: "kvs_dynamodb_retries_total",
      help: "DynamoDB work retried after a failure or unprocessed items, by what was retried (write, read, delete...)",
      labelNames: ["what"],
      registers,
      collect() {
        this.reset();
        for (const o of sources.counters.outcomes()) if (o.kind === "retry") this.inc({ what: o.operation }, o.count);
      },
    });
    new PromCounter({
      name: "kvs_orphan_sweeps_total",
      help: "Orphan-chunk sweeps by result",
      labelNames: ["result"],
      registers,
      collect() {
        this.reset();
        const failed = sources.counters.get(Counter.sweepFailures);
        this.inc({ result: "ok" }, sources.counters.get(Counter.sweeps) - failed);
        this.inc({ result: "error" }, failed);
      },
    });
    new PromCounter({
      name: "kvs_orphan_chunks_deleted_total",
      help: "Chunk items of replaced or deleted large values that sweeps removed",
      registers,
      collect() {
        this.reset();
        this.inc(sources.counters.get(Counter.sweepDeleted));
      },
    });
    new PromCounter({
      name: "kvs_expired_reads_total",
      help: "Requests that found a value past its expiry and answered as if it were absent",
      registers,
      collect() {
        this.reset();
        this.inc(sources.counters.get(Counter.expiredReads));
      },
    });
    if (sources.batchQueues !== undefined) {
      const queues = sources.batchQueues;
      new Gauge({
        name: "kvs_batch_queue_depth",
        help: "Requests waiting in a DynamoDB batcher (write: BatchWriteItem, read: BatchGetItem) for a batch",
        labelNames: ["batcher"],
        registers,
        collect() {
          const q = queues();
          this.set({ batcher: "write" }, q.write.queued);
          this.set({ batcher: "read" }, q.read.queued);
        },
      });
      new Gauge({
        name: "kvs_batches_in_flight",
        help: "DynamoDB batches sent and not yet settled, by batcher",
        labelNames: ["batcher"],
        registers,
        collect() {
          const q = queues();
          this.set({ batcher: "write" }, q.write.inFlight);
          this.set({ batcher: "read" }, q.read.inFlight);
        },
      });
    }
    new PromCounter({
      name: "kvs_bytes_total",
      help: "Bytes read from and written to client connections",
      labelNames: ["direction"],
      registers,
      collect() {
        this.reset();
        this.inc({ direction: "in" }, sources.counters.get(Counter.bytesIn));
        this.inc({ direction: "out" }, sources.counters.get(Counter.bytesOut));
      },
    });
    new PromCounter({
      name: "kvs_streamed_frames_total",
      help: "Frames of at least --stream-from-bytes read as they arrived instead of buffered whole",
      registers,
      collect() {
        this.reset();
        this.inc(sources.counters.get(Counter.streamedFrames));
      },
    });
    new PromCounter({
      name: "kvs_forced_gc_total",
      help: "Full garbage collections forced because the JS heap passed --memory-soft-limit-mib",
      registers,
      collect() {
        this.reset();
        this.inc(sources.counters.get(Counter.forcedCollections));
      },
    });
    new PromCounter({
      name: "kvs_forced_gc_seconds_total",
      help: "Time the forced collections took (the server answers nothing meanwhile)",
      registers,
      collect() {
        this.reset();
        this.inc(sources.counters.get(Counter.forcedCollectionMicros) / 1e6);
      },
    });
    new PromCounter({
      name: "kvs_budget_pauses_total",
      help: "Times a connection stopped reading mid-frame because the byte budget (--max-buffered-bytes) was spent",
      registers,
      collect() {
        this.reset();
        this.inc(sources.counters.get(Counter.budgetPauses));
      },
    });
    if (sources.budget !== undefined) {
      const budget = sources.budget;
      new Gauge({
        name: "kvs_buffered_bytes",
        help: "Bytes held for clients: frames being read, large requests in progress, chunks in flight, answers unsent",
        registers,
        collect() {
          this.set(budget().used);
        },
      });
      new Gauge({
        name: "kvs_buffered_bytes_limit",
        help: "The byte budget (--max-buffered-bytes)",
        registers,
        collect() {
          this.set(budget().limit);
        },
      });
    }
    new PromCounter({
      name: "kvs_protocol_errors_total",
      help: "Connections closed for bytes that break the protocol",
      registers,
      collect() {
        this.reset();
        this.inc(sources.counters.get(Counter.protocolErrors));
      },
    });
    if (sources.tlsNotAfter !== undefined) {
      const notAfter = sources.tlsNotAfter;
      new Gauge({
        name: "kvs_tls_certificate_expiry_timestamp_seconds",
        help: "When the served TLS certificate expires (Unix time); alert well before it",
        registers,
        collect() {
          this.set(notAfter().getTime() / 1000);
        },
      });
      new PromCounter({
        name: "kvs_tls_handshake_failures_total",
        help: "TLS handshakes that failed or presented a client certificate that did not verify",
        registers,
        collect() {
          this.reset();
          this.inc(sources.counters.get(Counter.tlsHandshakeFailures));
        },
      });
      new PromCounter({
        name: "kvs_tls_reloads_total",
        help: "Certificate reloads (SIGHUP) by result; a failed one keeps the previous certificate",
        labelNames: ["result"],
        registers,
        collect() {
          this.reset();
          this.inc({ result: "ok" }, sources.counters.get(Counter.tlsReloads));
          this.inc({ result: "error" }, sources.counters.get(Counter.tlsReloadFailures));
        },
      });
    }
    if (sources.keyCache !== undefined) {
      const read = sources.keyCache;
      new PromCounter({
        name: "kvs_data_key_cache_total",
        help: "Key lookups (branch keys, and KMS data keys of older items) served from the cache (hit) or needing KMS (miss)",
        labelNames: ["result"],
        registers,
        collect() {
          this.reset();
          const { hits, misses } = read();
          this.inc({ result: "hit" }, hits);
          this.inc({ result: "miss" }, misses);
        },
      });
    }
    if (sources.branchKey !== undefined) {
      const read = sources.branchKey;
      new Gauge({
        name: "kvs_branch_key_version",
        help: "The branch-key version new writes use",
        registers,
        collect() {
          this.set(read().version);
        },
      });
      new PromCounter({
        name: "kvs_branch_key_rotations_total",
        help: "Branch-key rotations this process made or finished (scheduled and on demand)",
        registers,
        collect() {
          this.reset();
          this.inc(read().rotations);
        },
      });
    }
  }

  /** The Prometheus content type of {@link text}. */
  get contentType(): string {
    return this.#registry.contentType;
  }

  /** Every metric in the Prometheus text format. */
  async text(): Promise<string> {
    return (await this.#registry.metrics()) + this.#latencyText();
  }

  #latencyText(): string {
    const name = "kvs_request_duration_seconds";
    let out = `# HELP ${name} Time from reading a request to its answer, for requests that waited on the store\n`;
    out += `# TYPE ${name} histogram\n`;
    for (const frontEnd of FRONT_ENDS) {
      for (const [op, h] of this.#sources.stats[frontEnd].latency) {
        const labels = `front_end="${frontEnd}",op="${op}"`;
        let cumulative = 0;
        LATENCY_BUCKETS.forEach((le, i) => {
          cumulative += h.buckets[i] as number;
          out += `${name}_bucket{${labels},le="${le}"} ${cumulative}\n`;
        });
        out += `${name}_bucket{${labels},le="+Inf"} ${h.count}\n`;
        out += `${name}_sum{${labels}} ${h.sum}\n${name}_count{${labels}} ${h.count}\n`;
      }
    }
    return out;
  }
}
