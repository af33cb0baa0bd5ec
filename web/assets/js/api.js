// The console's only way to the server: Serval's public HTTP API, with the signed-in key.
// Paths are relative ("v1/models"), so the console also works behind a proxy under a prefix.

/** An error answer from the server, with the message of its OpenAI-shaped body. */
export class ApiError extends Error {
  constructor(status, message, code = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }

  static fromBody(status, body, fallback) {
    const error = body && typeof body === "object" ? body.error : null;
    if (error && typeof error === "object") {
      return new ApiError(status, error.message || fallback, error.code ?? null);
    }
    return new ApiError(status, fallback);
  }

  static async fromResponse(response) {
    const fallback = `${response.status} ${response.statusText}`.trim();
    let body = null;
    try {
      body = await response.json();
    } catch {
      // not JSON: the status line says enough
    }
    return ApiError.fromBody(response.status, body, fallback);
  }
}

/** The absolute URL of an API path, as a curl command needs it. */
export function absoluteUrl(path) {
  return new URL(path, document.baseURI).href;
}

export class Api {
  /** @param {string} key an api or admin key ("" where the server has auth turned off) */
  constructor(key) {
    this.key = key;
  }

  headers(withJson) {
    const headers = {};
    if (this.key) headers.Authorization = `Bearer ${this.key}`;
    if (withJson) headers["Content-Type"] = "application/json";
    return headers;
  }

  /** Send a request; resolves to the Response when it is 2xx, throws ApiError otherwise. */
  async send(method, path, body = undefined, signal = undefined) {
    let response;
    try {
      response = await fetch(path, {
        method,
        headers: this.headers(body !== undefined),
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        signal,
      });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, `The server cannot be reached (${error.message}).`);
    }
    if (!response.ok) throw await ApiError.fromResponse(response);
    return response;
  }

  async get(path, signal) {
    return parsed(await this.send("GET", path, undefined, signal));
  }

  async post(path, body = {}, signal = undefined) {
    return parsed(await this.send("POST", path, body, signal));
  }

  async text(path, signal) {
    return (await this.send("GET", path, undefined, signal)).text();
  }

  /**
   * POST and read the answer as server-sent events: yields each `data:` payload parsed as JSON,
   * ends at `data: [DONE]` or when the server closes, and throws ApiError on an error event.
   * Aborting `signal` (or leaving the loop early) closes the connection.
   */
  async *stream(path, body, signal = undefined) {
    const response = await this.send("POST", path, body, signal);
    for await (const data of sseData(response.body)) {
      if (data === "[DONE]") return;
      let payload;
      try {
        payload = JSON.parse(data);
      } catch {
        throw new ApiError(response.status, `The server sent an event that is not JSON: ${data}`);
      }
      if (payload && payload.error) {
        throw ApiError.fromBody(response.status, payload, "The stream ended with an error.");
      }
      yield payload;
    }
  }
}

async function parsed(response) {
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/** The `data` of each event of an SSE byte stream (comments such as keep-alive pings skipped). */
export async function* sseData(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      const lines = buffer.split("\n");
      buffer = done ? "" : lines.pop();
      for (const raw of lines) {
        const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
        if (line === "") {
          if (data.length) yield data.join("\n");
          data = [];
        } else if (line.startsWith("data:")) {
          data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
        }
        // other fields (event, id, retry) and ":" comments carry nothing the console needs
      }
      if (done) break;
    }
    if (data.length) yield data.join("\n");
  } finally {
    reader.cancel().catch(() => {});
  }
}
