// What every test program shares: the gateway's URL from the harness, and its line protocol
// (`progress <n>` as work completes, one `result <json>` at the end).

export const url = process.env.STARCITE_URL ?? "";
if (!url) throw new Error("STARCITE_URL is not set: the Rust e2e tests run these programs");

export function progress(count: number): void {
  process.stdout.write(`progress ${count}\n`);
}

export function result(value: unknown): void {
  process.stdout.write(`result ${JSON.stringify(value)}\n`);
}

/** Runs `calls` with at most `window` in flight, keeping each call's answer at its index. */
export async function pipelined<T>(count: number, window: number, call: (index: number) => Promise<T>): Promise<T[]> {
  const answers: T[] = new Array(count);
  const inFlight = new Set<Promise<void>>();
  for (let index = 0; index < count; index += 1) {
    const running: Promise<void> = call(index).then((answer) => {
      answers[index] = answer;
      inFlight.delete(running);
    });
    inFlight.add(running);
    if (inFlight.size >= window) await Promise.race(inFlight);
  }
  await Promise.all(inFlight);
  return answers;
}
