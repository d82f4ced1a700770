/** Silence after which TCP keepalive probes start, in ms, on both ends (below the AWS NLB's 350 s idle timeout). */
export const KEEPALIVE_IDLE_MS = 60_000;
