/** Loads and validates the mesh configuration, naming the file, line and field of every problem. */
import { readFileSync } from "node:fs";
import { isNode, LineCounter, parseDocument, type Document } from "yaml";
import { parse as parseCel } from "@bufbuild/cel";
import type { z } from "zod";
import { meshConfigSchema, type JourneyArm, type MeshConfig } from "./schema.js";

/** One problem in a configuration file. */
export interface ConfigProblem {
  file: string;
  line: number;
  path: string;
  message: string;
}

export class MeshConfigError extends Error {
  constructor(readonly problems: ConfigProblem[]) {
    super(
      `invalid mesh configuration:\n${problems.map((p) => `  ${p.file}:${p.line}: ${p.path}: ${p.message}`).join("\n")}`,
    );
    this.name = "MeshConfigError";
  }
}

function lineOf(doc: Document, lc: LineCounter, path: (string | number)[]): number {
  // The deepest node that exists along the path.
  for (let n = path.length; n >= 0; n--) {
    const node = doc.getIn(path.slice(0, n), true);
    if (isNode(node) && node.range) return lc.linePos(node.range[0]).line;
  }
  return 1;
}

const pathText = (path: (string | number)[]) =>
  path.map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? p : `.${p}`)).join("") || "(root)";

/** Parses YAML text into a validated configuration; `file` is used in messages. */
export function parseMeshConfig(text: string, file = "<config>"): MeshConfig {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false });
  if (doc.errors.length > 0) {
    throw new MeshConfigError(
      doc.errors.map((e) => ({
        file,
        line: e.linePos?.[0].line ?? 1,
        path: "(yaml)",
        message: e.message.split("\n")[0] ?? e.message,
      })),
    );
  }
  const result = meshConfigSchema.safeParse(doc.toJS());
  const problems: ConfigProblem[] = [];
  if (!result.success) {
    for (const issue of result.error.issues) {
      problems.push({
        file,
        line: lineOf(doc, lc, issue.path),
        path: pathText(issue.path),
        message: issue.message,
      });
    }
    throw new MeshConfigError(problems);
  }
  const cfg = result.data;
  const channels = new Set(cfg.channels.map((c) => c.name));
  const problem = (path: (string | number)[], message: string) =>
    problems.push({ file, line: lineOf(doc, lc, path), path: pathText(path), message });
  const seenKeys = new Map<string, string>();
  cfg.workspaces.forEach((ws, w) => {
    ws.writeKeys.forEach((k, i) => {
      const other = seenKeys.get(k.key);
      if (other !== undefined)
        problem(["workspaces", w, "writeKeys", i, "key"], `write key already used by ${other}`);
      seenKeys.set(k.key, `${ws.id}/${k.source}`);
    });
    const types = new Set<string>();
    ws.identity.identifiers.forEach((r, i) => {
      if (types.has(r.type))
        problem(
          ["workspaces", w, "identity", "identifiers", i, "type"],
          `duplicate identifier type "${r.type}"`,
        );
      types.add(r.type);
    });
    ws.identity.blocked.forEach((b, i) => {
      const m = /^\/(.*)\/([a-z]*)$/.exec(b);
      if (m === null) return;
      try {
        new RegExp(m[1]!, m[2]);
      } catch (e) {
        problem(
          ["workspaces", w, "identity", "blocked", i],
          `invalid regex: ${e instanceof Error ? e.message : String(e)}`,
        );
      }
    });
    const segments = new Set<string>();
    ws.segments.forEach((s, i) => {
      if (segments.has(s.name))
        problem(["workspaces", w, "segments", i, "name"], `duplicate segment "${s.name}"`);
      segments.add(s.name);
      try {
        parseCel(s.condition);
      } catch (e) {
        problem(
          ["workspaces", w, "segments", i, "condition"],
          `invalid CEL: ${e instanceof Error ? e.message : String(e)}`,
        );
      }
    });
    ws.journeys.forEach((j, i) => {
      const t = j.trigger;
      const seg =
        "segmentEntered" in t ? t.segmentEntered : "segmentExited" in t ? t.segmentExited : undefined;
      if (seg !== undefined && !segments.has(seg))
        problem(["workspaces", w, "journeys", i, "trigger"], `unknown segment "${seg}"`);
      if ("event" in t && t.condition !== undefined) {
        try {
          parseCel(t.condition);
        } catch (e) {
          problem(
            ["workspaces", w, "journeys", i, "trigger", "condition"],
            `invalid CEL: ${e instanceof Error ? e.message : String(e)}`,
          );
        }
      }
      if (j.action !== undefined && !channels.has(j.action.channel))
        problem(
          ["workspaces", w, "journeys", i, "action", "channel"],
          `unknown channel "${j.action.channel}"`,
        );
      const checkArms = (arms: JourneyArm[] | undefined, at: (string | number)[]) =>
        arms?.forEach((arm, k) => {
          const where = [...at, "branches", k];
          if (arm.when !== undefined) {
            try {
              parseCel(arm.when);
            } catch (e) {
              problem([...where, "when"], `invalid CEL: ${e instanceof Error ? e.message : String(e)}`);
            }
          } else if (k < arms.length - 1) {
            problem([...where, "when"], "only the last arm may go without `when` (it is the otherwise)");
          }
          if (arm.action !== undefined && !channels.has(arm.action.channel))
            problem([...where, "action", "channel"], `unknown channel "${arm.action.channel}"`);
          checkArms(arm.branches, where);
        });
      checkArms(j.branches, ["workspaces", w, "journeys", i]);

      if ("date" in t && "on" in t.date) {
        const [y, m, d] = t.date.on.split("-").map(Number) as [number, number, number];
        const date = new Date(Date.UTC(y, m - 1, d));
        if (date.getUTCMonth() !== m - 1 || date.getUTCDate() !== d)
          problem(
            ["workspaces", w, "journeys", i, "trigger", "date", "on"],
            `"${t.date.on}" is not a calendar date`,
          );
      }
      j.exit.forEach((x, k) => {
        const where = ["workspaces", w, "journeys", i, "exit", k];
        const exitSeg =
          "segmentEntered" in x ? x.segmentEntered : "segmentExited" in x ? x.segmentExited : undefined;
        if (exitSeg !== undefined && !segments.has(exitSeg)) problem(where, `unknown segment "${exitSeg}"`);
        if ("event" in x && x.condition !== undefined) {
          try {
            parseCel(x.condition);
          } catch (e) {
            problem([...where, "condition"], `invalid CEL: ${e instanceof Error ? e.message : String(e)}`);
          }
        }
      });
    });
    try {
      new Intl.DateTimeFormat("en-US", { timeZone: ws.timezone });
    } catch {
      problem(["workspaces", w, "timezone"], `unknown IANA time zone "${ws.timezone}"`);
    }
    const journeys = new Set(ws.journeys.map((j) => j.name));
    ws.suppression.cancelOn.forEach((c, i) => {
      c.journeys.forEach((name, k) => {
        if (!journeys.has(name))
          problem(
            ["workspaces", w, "suppression", "cancelOn", i, "journeys", k],
            `unknown journey "${name}"`,
          );
      });
    });
  });
  if (problems.length > 0) throw new MeshConfigError(problems);
  return cfg;
}

/** Reads and validates a configuration file. */
export function loadMeshConfig(file: string): MeshConfig {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new MeshConfigError([
      { file, line: 0, path: "(file)", message: e instanceof Error ? e.message : String(e) },
    ]);
  }
  return parseMeshConfig(text, file);
}

/** Finds the workspace and source of a write key. */
export function writeKeyIndex(cfg: MeshConfig): Map<string, { workspace: string; source: string }> {
  const out = new Map<string, { workspace: string; source: string }>();
  for (const ws of cfg.workspaces)
    for (const k of ws.writeKeys) out.set(k.key, { workspace: ws.id, source: k.source });
  return out;
}

/**
 * Validates one channel's `settings` with its dispatcher's own schema, naming file,
 * line and field of every problem (a MeshConfigError), and returns the parsed value.
 */
export function parseChannelSettings<S extends z.ZodTypeAny>(
  file: string,
  channel: string,
  schema: S,
): z.output<S> {
  const text = readFileSync(file, "utf8");
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false });
  const channels = (doc.toJS() as { channels?: { name?: string; settings?: unknown }[] }).channels ?? [];
  const index = channels.findIndex((c) => c.name === channel);
  if (index < 0) {
    throw new MeshConfigError([{ file, line: 1, path: "channels", message: `no channel named ${channel}` }]);
  }
  const result = schema.safeParse(channels[index]?.settings ?? {});
  if (result.success) return result.data as z.output<S>;
  throw new MeshConfigError(
    result.error.issues.map((issue) => {
      const path = ["channels", index, "settings", ...issue.path];
      return { file, line: lineOf(doc, lc, path), path: pathText(path), message: issue.message };
    }),
  );
}
