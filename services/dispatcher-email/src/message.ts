/**
 * An email, pure parts: which template, the rendered message with its
 * unsubscribe link (RFC 8058 one-click headers), and the signed unsubscribe
 * token that names the workspace and the address without a lookup.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import type { JsonObject } from "@bufbuild/protobuf";
import { destinationOf, escapeHtml, renderTemplate, type Action } from "@kairos/dispatcher-sdk";

export interface EmailTemplate {
  subject: string;
  text?: string | undefined;
  html?: string | undefined;
}

export interface EmailSettings {
  url: string;
  timeout: number;
  headers: Record<string, string>;
  from: string;
  replyTo?: string | undefined;
  templates: Record<string, EmailTemplate>;
}

export type Rendered = { ok: true; body: JsonObject } | { ok: false; reason: string };

/** `<payload.b64url>.<hmac>`: the workspace and address, signed. */
export function unsubscribeToken(secret: string, workspace: string, email: string): string {
  const payload = Buffer.from(JSON.stringify([workspace, email])).toString("base64url");
  const mac = createHmac("sha256", secret).update(payload).digest("base64url");
  return `${payload}.${mac}`;
}

/** The workspace and address of a valid token, or why it is not valid. */
export function readUnsubscribeToken(
  secret: string,
  token: string,
): { ok: true; workspace: string; email: string } | { ok: false; error: string } {
  const [payload, mac, extra] = token.split(".");
  if (payload === undefined || mac === undefined || extra !== undefined || payload === "") {
    return { ok: false, error: "token is malformed" };
  }
  const want = createHmac("sha256", secret).update(payload).digest();
  const got = Buffer.from(mac, "base64url");
  if (got.length !== want.length || !timingSafeEqual(got, want))
    return { ok: false, error: "token signature is not valid" };
  try {
    const v = JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as unknown;
    if (Array.isArray(v) && v.length === 2 && typeof v[0] === "string" && typeof v[1] === "string") {
      return { ok: true, workspace: v[0], email: v[1] };
    }
  } catch {
    // fall through
  }
  return { ok: false, error: "token is malformed" };
}

/** The ESP request for an action, or the permanent reason it cannot be sent. */
export function renderEmail(
  a: Action,
  s: EmailSettings,
  unsubscribeUrl: (email: string) => string,
): Rendered {
  const to = destinationOf(a, "email");
  if (to === undefined) return { ok: false, reason: "no_email_address" };
  const name = typeof a.payload.template === "string" ? a.payload.template : "default";
  const t = s.templates[name] ?? (name === "default" ? undefined : s.templates.default);
  if (t === undefined) return { ok: false, reason: "unknown_template" };
  const unsubscribe = unsubscribeUrl(to);
  const vars = {
    traits: a.traits,
    payload: a.payload,
    profile_id: a.profileId,
    journey: a.journey,
    email: to,
    unsubscribe_url: unsubscribe,
  };
  const marketing = a.purpose !== "transactional";
  return {
    ok: true,
    body: {
      from: s.from,
      to,
      ...(s.replyTo === undefined ? {} : { reply_to: s.replyTo }),
      subject: renderTemplate(t.subject, vars),
      ...(t.text === undefined ? {} : { text: renderTemplate(t.text, vars) }),
      ...(t.html === undefined ? {} : { html: renderTemplate(t.html, vars, escapeHtml) }),
      headers: marketing
        ? { "List-Unsubscribe": `<${unsubscribe}>`, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click" }
        : {},
      template: name,
      metadata: {
        action_id: a.actionId,
        journey: a.journey,
        profile_id: a.profileId,
        workspace: a.workspace,
      },
    },
  };
}
