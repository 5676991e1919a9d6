/**
 * The Segment HTTP tracking API: `POST /v1/{track,identify,page,screen,group,alias,batch}`,
 * write key as the basic-auth user name (or `writeKey` in the body, as browser
 * SDKs send it), gzip bodies, Segment's size limits. The response is sent only
 * after JetStream has stored every accepted event.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createGunzip, createInflate } from "node:zlib";
import { randomUUID } from "node:crypto";
import type { AddressInfo } from "node:net";
import type { Readable } from "node:stream";
import { context, SpanKind, SpanStatusCode, trace, type Tracer } from "@opentelemetry/api";
import { extractTraceContext, recordSpanError, type Logger } from "@kairos/kit";
import { isCallType, InvalidEvent, MAX_BATCH_BYTES } from "./segment-spec.js";
import { sortJsonBody, type Source } from "./batch.js";
import { NotDurable, type Ingestor } from "./ingestor.js";

export interface HttpApiOptions {
  host: string;
  port: number;
  writeKeys: ReadonlyMap<string, Source>;
  ingestor: Ingestor;
  tracer: Tracer;
  logger: Logger;
}

export interface HttpApi {
  readonly url: string;
  close(): Promise<void>;
}

class HttpProblem extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const CORS = {
  "access-control-allow-origin": "*",
  "access-control-allow-methods": "POST, OPTIONS",
  "access-control-allow-headers": "authorization, content-type, content-encoding",
  "access-control-max-age": "86400",
};

/** The write key from `Authorization: Basic base64(key:)`, if any. */
export function writeKeyFromAuthorization(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const m = /^Basic\s+(\S+)$/i.exec(header.trim());
  if (m === null) return undefined;
  const decoded = Buffer.from(m[1]!, "base64").toString("utf8");
  const key = decoded.includes(":") ? decoded.slice(0, decoded.indexOf(":")) : decoded;
  return key === "" ? undefined : key;
}

/** Reads the body, inflating gzip/deflate, refusing more than `limit` bytes either way. */
async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers["content-length"] ?? "0");
  if (declared > limit)
    throw new HttpProblem(413, `request body is ${declared} bytes, over the ${limit}-byte limit`);
  const encoding = (req.headers["content-encoding"] ?? "identity").toLowerCase();
  let stream: Readable = req;
  if (encoding === "gzip") stream = req.pipe(createGunzip());
  else if (encoding === "deflate") stream = req.pipe(createInflate());
  else if (encoding !== "identity")
    throw new HttpProblem(415, `unsupported Content-Encoding ${JSON.stringify(encoding)}`);
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of stream) {
      const b = chunk as Buffer;
      size += b.byteLength;
      if (size > limit) {
        req.resume();
        throw new HttpProblem(413, `request body is over the ${limit}-byte limit`);
      }
      chunks.push(b);
    }
  } catch (e) {
    if (e instanceof HttpProblem) throw e;
    throw new HttpProblem(
      400,
      `could not read the ${encoding} body: ${e instanceof Error ? e.message : String(e)}`,
    );
  }
  return Buffer.concat(chunks);
}

function send(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    ...CORS,
    ...headers,
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
  });
  res.end(text);
}

export async function startHttpApi(opts: HttpApiOptions): Promise<HttpApi> {
  const { ingestor, tracer, logger, writeKeys } = opts;

  async function handle(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const startedAt = Date.now();
    const bytes = await readBody(req, MAX_BATCH_BYTES);
    let body: unknown;
    try {
      body = JSON.parse(bytes.toString("utf8"));
    } catch (e) {
      throw new HttpProblem(
        400,
        `the request body is not valid JSON: ${e instanceof Error ? e.message : String(e)}`,
      );
    }
    const bodyKey =
      typeof body === "object" &&
      body !== null &&
      typeof (body as { writeKey?: unknown }).writeKey === "string"
        ? (body as { writeKey: string }).writeKey
        : undefined;
    const key = writeKeyFromAuthorization(req.headers.authorization) ?? bodyKey;
    if (key === undefined) {
      throw new HttpProblem(401, "a write key is required: send it as the basic-auth user name", {
        "www-authenticate": 'Basic realm="kairos"',
      });
    }
    const src = writeKeys.get(key);
    if (src === undefined) {
      throw new HttpProblem(401, "unknown write key", { "www-authenticate": 'Basic realm="kairos"' });
    }
    const span = trace.getActiveSpan();
    span?.setAttributes({ "kairos.workspace": src.workspace, "kairos.source": src.source });
    let sorted;
    try {
      sorted = sortJsonBody(body, path as Parameters<typeof sortJsonBody>[1], src, startedAt, randomUUID);
    } catch (e) {
      if (e instanceof InvalidEvent) throw new HttpProblem(400, e.message);
      throw e;
    }
    ingestor.countRejected(src.workspace, src.source, sorted.rejections.length);
    span?.setAttributes({
      "kairos.events.valid": sorted.valid.length,
      "kairos.events.rejected": sorted.rejections.length,
    });
    if (sorted.valid.length === 0) {
      send(res, 400, {
        success: false,
        error: sorted.rejections.length === 0 ? "the batch holds no events" : "no event was valid",
        accepted: 0,
        rejected: sorted.rejections,
      });
      return;
    }
    const { accepted, duplicates } = await ingestor.accept(sorted.valid, startedAt, "http");
    send(res, 200, { success: true, accepted, duplicates, rejected: sorted.rejections });
  }

  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    const path = /^\/v1\/([a-z]+)\/?$/.exec(url.pathname)?.[1];
    if (req.method === "OPTIONS") {
      res.writeHead(204, CORS).end();
      return;
    }
    if (path === undefined || !(path === "batch" || isCallType(path))) {
      send(res, 404, { success: false, error: `no such endpoint: ${url.pathname}` });
      req.resume();
      return;
    }
    if (req.method !== "POST") {
      send(
        res,
        405,
        { success: false, error: `${req.method ?? "?"} is not allowed; use POST` },
        { allow: "POST, OPTIONS" },
      );
      req.resume();
      return;
    }
    const parent = extractTraceContext(
      {
        get: (k) => {
          const v = req.headers[k.toLowerCase()];
          return Array.isArray(v) ? v[0] : v;
        },
        set: () => undefined,
      },
      context.active(),
    );
    const span = tracer.startSpan(
      `POST /v1/${path}`,
      { kind: SpanKind.SERVER, attributes: { "http.request.method": "POST", "url.path": url.pathname } },
      parent,
    );
    context
      .with(trace.setSpan(parent, span), () => handle(req, res, path))
      .catch((e: unknown) => {
        if (e instanceof HttpProblem) {
          send(res, e.status, { success: false, error: e.message }, e.headers);
          span.setStatus({
            code: e.status >= 500 ? SpanStatusCode.ERROR : SpanStatusCode.UNSET,
            message: e.message,
          });
        } else if (e instanceof NotDurable) {
          logger.warn({ err: e }, "events not stored; asking the client to retry");
          recordSpanError(span, e);
          send(res, 503, { success: false, error: e.message }, { "retry-after": "1" });
        } else {
          logger.error({ err: e }, "ingest request failed");
          recordSpanError(span, e);
          send(res, 500, { success: false, error: "internal error" });
        }
      })
      .finally(() => {
        span.setAttribute("http.response.status_code", res.statusCode);
        span.end();
      });
  });
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const url = `http://${addr.address.includes(":") ? `[${addr.address}]` : addr.address}:${addr.port}`;
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  };
}
