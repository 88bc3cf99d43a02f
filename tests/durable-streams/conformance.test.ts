// The Durable Streams server conformance suite, run against the gateway the e2e test
// `durable_streams_conformance` starts (its URL in STARCITE_URL).
import { runConformanceTests } from "@durable-streams/server-conformance-tests"

const baseUrl = process.env.STARCITE_URL
if (!baseUrl) {
  throw new Error(`STARCITE_URL must name the gateway under test`)
}

runConformanceTests({
  baseUrl,
  longPollTimeoutMs: Number(process.env.STARCITE_LONG_POLL_TIMEOUT_MS ?? 2000),
})
