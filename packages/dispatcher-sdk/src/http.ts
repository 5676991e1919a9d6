/**
 * JSON over HTTP(S) with one keep-alive connection pool per origin (node:http):
 * cheaper per request than `fetch`, which matters at thousands of deliveries a
 * second. The caller classifies the answer (see classify.ts).
 */
import { Agent as HttpAgent, request as httpRequest, type IncomingHttpHeaders } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";

export interface HttpAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  /** The response body as text, up to 64 KiB. */
  body: string;
}

/** A timeout of the whole request, named like the platform's (`TimeoutError`). */
export class RequestTimeout extends Error {
  constructor(ms: number) {
    super(`no answer within ${ms} ms`);
    this.name = "TimeoutError";
  }
}

const MAX_BODY = 64 * 1024;

export class HttpClient {
  private readonly agents = new Map<string, HttpAgent>();

  constructor(private readonly maxSocketsPerOrigin: number) {}

  private agent(url: URL): HttpAgent {
    let a = this.agents.get(url.origin);
    if (a === undefined) {
      const opts = { keepAlive: true, maxSockets: this.maxSocketsPerOrigin };
      a = url.protocol === "https:" ? new HttpsAgent(opts) : new HttpAgent(opts);
      this.agents.set(url.origin, a);
    }
    return a;
  }

  /** Sends `body` (JSON text unless headers say otherwise); rejects on network errors and timeouts. */
  request(
    method: string,
    url: string | URL,
    headers: Record<string, string>,
    body: string | undefined,
    timeoutMs: number,
  ): Promise<HttpAnswer> {
    const target = typeof url === "string" ? new URL(url) : url;
    const send = target.protocol === "https:" ? httpsRequest : httpRequest;
    return new Promise<HttpAnswer>((resolve, reject) => {
      const h: Record<string, string | number> = { ...headers };
      if (body !== undefined) {
        h["content-length"] = Buffer.byteLength(body);
        h["content-type"] ??= "application/json";
      }
      const req = send(target, { method, agent: this.agent(target), headers: h }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (c: Buffer) => {
          size += c.length;
          if (size <= MAX_BODY) chunks.push(c);
        });
        res.once("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString("utf8"),
          }),
        );
        res.once("error", reject);
      });
      req.setTimeout(timeoutMs, () => req.destroy(new RequestTimeout(timeoutMs)));
      req.once("error", reject);
      req.end(body);
    });
  }

  post(
    url: string | URL,
    headers: Record<string, string>,
    body: string,
    timeoutMs: number,
  ): Promise<HttpAnswer> {
    return this.request("POST", url, headers, body, timeoutMs);
  }

  close(): void {
    for (const a of this.agents.values()) a.destroy();
    this.agents.clear();
  }
}
