/**
 * `{{path}}` placeholders in channel templates (an email subject, an agent
 * script), read from a plain object: `{{traits.first_name}}`, `{{profile_id}}`,
 * `{{payload.offer}}`. A missing value renders as the empty string, or as the
 * fallback after `|`: `{{traits.first_name|there}}`.
 */
const PLACEHOLDER = /\{\{\s*([A-Za-z0-9_.-]+)\s*(?:\|([^}]*))?\}\}/g;

function lookup(vars: unknown, path: string): unknown {
  let v: unknown = vars;
  for (const part of path.split(".")) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<string, unknown>)[part];
  }
  return v;
}

function text(v: unknown): string | undefined {
  if (v === undefined || v === null || v === "") return undefined;
  if (typeof v === "string") return v;
  if (typeof v === "number" || typeof v === "boolean" || typeof v === "bigint") return String(v);
  return JSON.stringify(v);
}

export function renderTemplate(
  template: string,
  vars: unknown,
  escape: (s: string) => string = (s) => s,
): string {
  return template.replace(PLACEHOLDER, (_, path: string, fallback: string | undefined) =>
    escape(text(lookup(vars, path)) ?? fallback ?? ""),
  );
}

/** HTML-escapes text for an element body or a quoted attribute. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
