/** A real local HTTP endpoint standing in for a channel: records every POST it receives. */
import { createServer, type IncomingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";

export interface ReceivedPost {
  headers: IncomingHttpHeaders;
  body: Record<string, unknown>;
  receivedAt: number;
}

export interface ChannelEndpoint extends AsyncDisposable {
  readonly url: string;
  readonly posts: ReceivedPost[];
  /** Posts grouped by their Idempotency-Key. */
  byKey(): Map<string, ReceivedPost[]>;
}

export async function startChannelEndpoint(): Promise<ChannelEndpoint> {
  const posts: ReceivedPost[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      let body: Record<string, unknown> = {};
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown>;
      } catch {
        // recorded as an empty body; the test's assertions will say so
      }
      posts.push({ headers: req.headers, body, receivedAt: Date.now() });
      res.writeHead(200, { "content-type": "application/json" }).end('{"ok":true}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hooks/webhook`,
    posts,
    byKey() {
      const out = new Map<string, ReceivedPost[]>();
      for (const p of posts) {
        const key = String(p.headers["idempotency-key"] ?? "");
        out.set(key, [...(out.get(key) ?? []), p]);
      }
      return out;
    },
    async [Symbol.asyncDispose]() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
