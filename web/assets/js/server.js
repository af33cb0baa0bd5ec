// Server page: health, and live figures from /metrics with a chart of the last two minutes.
import { ApiError } from "./api.js";
import { $, describeError, formatNumber } from "./dom.js";
import { drawChart } from "./chart.js";
import { figures, parsePrometheus, tokensPerSecond } from "./metrics.js";

const POLL_MS = 2000;
const CAPACITY = 60; // points kept: two minutes at one reading every two seconds
const FIGURES = {
  requests: "m-requests",
  running: "m-running",
  queued: "m-queued",
  generated: "m-generated",
  prompt: "m-prompt",
};

export class ServerPage {
  constructor(session) {
    this.api = session.api;
    this.signal = session.signal;
    this.timer = null;
    this.polling = false;
    this.reset();
    $("health-refresh").addEventListener("click", () => this.checkHealth(), {
      signal: this.signal,
    });
  }

  reset() {
    this.previous = null;
    this.rates = [];
    this.jobs = [];
  }

  activate() {
    this.checkHealth();
    this.poll();
    this.timer = setInterval(() => this.poll(), POLL_MS);
  }

  deactivate() {
    clearInterval(this.timer);
    this.timer = null;
  }

  close() {
    this.deactivate();
    this.reset();
    $("health-status").textContent = "…";
    $("health-status").className = "badge";
    $("health-issues").textContent = "";
    $("metrics-unavailable").hidden = true;
    $("metrics-figures").hidden = true;
    $("metrics-chart-figure").hidden = true;
  }

  async checkHealth() {
    const badge = $("health-status");
    const issues = $("health-issues");
    try {
      const response = await fetch("health", { cache: "no-store", signal: this.signal });
      const body = await response.json();
      badge.textContent = body.status;
      badge.className = `badge ${body.status === "healthy" ? "ok" : "bad"}`;
      issues.textContent = (body.issues || []).join("; ");
    } catch (error) {
      if (error.name === "AbortError") return;
      badge.textContent = "unreachable";
      badge.className = "badge bad";
      issues.textContent = describeError(error);
    }
  }

  async poll() {
    if (this.polling) return;
    this.polling = true;
    let text;
    try {
      text = await this.api.text("metrics", this.signal);
    } catch (error) {
      if (error.name === "AbortError") return;
      const final = error instanceof ApiError && [401, 403, 404].includes(error.status);
      if (final) this.deactivate(); // asking again will not change the answer
      this.unavailable(error);
      return;
    } finally {
      this.polling = false;
    }
    const reading = { at: performance.now(), ...figures(parsePrometheus(text)) };
    if (Object.keys(FIGURES).every((name) => reading[name] === null)) {
      this.unavailable(new Error("the server exports no Serval metrics"));
      return;
    }
    const rate = tokensPerSecond(this.previous, reading);
    this.previous = reading;
    this.show(reading, rate);
  }

  unavailable(error) {
    const reasons = {
      401: "this key may not read /metrics",
      403: "this key may not read /metrics",
      404: "this server has no /metrics",
    };
    const reason = (error instanceof ApiError && reasons[error.status]) || describeError(error);
    $("metrics-unavailable").textContent = `Metrics unavailable: ${reason}.`;
    $("metrics-unavailable").hidden = false;
    $("metrics-figures").hidden = true;
    $("metrics-chart-figure").hidden = true;
  }

  show(reading, rate) {
    $("metrics-unavailable").hidden = true;
    $("metrics-figures").hidden = false;
    $("metrics-chart-figure").hidden = false;
    for (const [name, id] of Object.entries(FIGURES)) {
      $(id).textContent = formatNumber(reading[name], 0);
    }
    $("m-tps").textContent = formatNumber(rate, 1);
    if (rate !== null) this.rates.push(rate);
    this.jobs.push(reading.running ?? 0);
    this.rates = this.rates.slice(-CAPACITY);
    this.jobs = this.jobs.slice(-CAPACITY);
    const canvas = $("metrics-chart");
    drawChart(
      canvas,
      [
        { values: this.rates, color: "--tps", label: "tokens/s" },
        { values: this.jobs, color: "--jobs", label: "running jobs" },
      ],
      CAPACITY,
    );
    canvas.setAttribute(
      "aria-label",
      `Chart of the last two minutes: now ${formatNumber(rate, 1)} tokens per second and ` +
        `${formatNumber(reading.running, 0)} running jobs`,
    );
  }
}
