// The official Durable Streams client writes and reads one stream, in two runs around a
// gateway restart (the e2e test `the_official_client_resumes_after_a_gateway_restart`):
//   node client.mjs write  <base-url> <name> <from> <to>         creates the stream, appends
//   node client.mjs resume <base-url> <name> <from> <to> <offset> appends, reads after offset
// Each run appends {"n": from} .. {"n": to - 1} with an idempotent producer (the resumed writer
// claims the next epoch, as a restarted process would), then prints one JSON line:
// {"offset": <the offset its read ended at>, "values": [<what it read>]}.
import { DurableStream, IdempotentProducer, stream } from "@durable-streams/client"

const [mode, baseUrl, name, from, to, resumeOffset] = process.argv.slice(2)
const url = `${baseUrl}/v1/stream/${name}`

const handle =
  mode === `write`
    ? await DurableStream.create({ url, contentType: `application/json` })
    : await DurableStream.connect({ url, contentType: `application/json` })
const producer = new IdempotentProducer(handle, `writer`, {
  epoch: mode === `write` ? 0 : 1,
  onError: (err) => {
    console.error(`append failed:`, err)
    process.exit(1)
  },
})
for (let n = Number(from); n < Number(to); n++) {
  producer.append(JSON.stringify({ n }))
}
await producer.flush()
await producer.detach()

const res = await stream({
  url,
  offset: mode === `write` ? `-1` : resumeOffset,
  live: false,
})
const values = await res.json()
console.log(JSON.stringify({ offset: res.offset, values }))
