// Reading Serval's Prometheus text (/metrics) into the few figures the Server page shows.

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

function number(text) {
  if (text === "+Inf" || text === "Inf") return Infinity;
  if (text === "-Inf") return -Infinity;
  return Number(text);
}

/** Every sample of the exposition, by metric name: {name: [{labels, value}]} */
export function parsePrometheus(text) {
  const samples = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = SAMPLE.exec(line.trim());
    if (!match) continue;
    const [, name, labelText, value] = match;
    const labels = {};
    for (const [, key, raw] of (labelText || "").matchAll(LABEL)) {
      labels[key] = raw.replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    }
    (samples[name] ||= []).push({ labels, value: number(value) });
  }
  return samples;
}

function total(samples, name) {
  const found = samples[name];
  return found ? found.reduce((sum, sample) => sum + sample.value, 0) : null;
}

/** The figures the console shows; null where the server does not export the metric. */
export function figures(samples) {
  return {
    requests: total(samples, "serval_requests_total"),
    running: total(samples, "serval_running_jobs"),
    queued: total(samples, "serval_queued_jobs"),
    generated: total(samples, "serval_generated_tokens_total"),
    prompt: total(samples, "serval_prompt_tokens_total"),
  };
}

/** Tokens per second between two readings ({at: ms, generated}); null when not known. */
export function tokensPerSecond(before, after) {
  if (!before || !after || before.generated === null || after.generated === null) return null;
  const seconds = (after.at - before.at) / 1000;
  if (seconds <= 0) return null;
  return Math.max(0, after.generated - before.generated) / seconds; // a restart resets counters
}
