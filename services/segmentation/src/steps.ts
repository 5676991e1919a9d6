/**
 * Journey branches: where a journey goes once a wait is over, decided on the
 * profile as it is then. A journey (the root) and each arm of its branches are
 * nodes: a wait, then an action, then branches. A node is addressed by its path
 * of arm indexes (`[]` the journey, `[1, 0]` the first arm of the second arm).
 * Pure; the service runs it from durable timers.
 */
import type { JourneyArm, JourneyConfig } from "@kairos/mesh-config";
import { customerTimeZone } from "@kairos/kit";
import type { JsonObject } from "@bufbuild/protobuf";
import { compileCondition, type Bindings, type Condition } from "./conditions.js";
import { nextLocalTime } from "./dates.js";

/** The parts of a journey or an arm that the walk reads. */
export type StepNode = Pick<JourneyArm, "wait" | "waitUntil" | "action" | "branches">;

const DAY = 86_400_000;

/** The node at `path`, or undefined when the config no longer has it. */
export function nodeAt(journey: JourneyConfig, path: readonly number[]): StepNode | undefined {
  let node: StepNode | undefined = journey;
  for (const i of path) node = node?.branches?.[i];
  return node;
}

/** Every arm's compiled `when`, by path (`"1.0"`); an arm without `when` is the otherwise. */
export function compileArms(journey: JourneyConfig): Map<string, Condition | undefined> {
  const out = new Map<string, Condition | undefined>();
  const walk = (arms: JourneyArm[] | undefined, at: number[]) =>
    arms?.forEach((arm, i) => {
      const path = [...at, i];
      out.set(path.join("."), arm.when === undefined ? undefined : compileCondition(arm.when));
      walk(arm.branches, path);
    });
  walk(journey.branches, []);
  return out;
}

/** When a node's action (or its branches) is due: after its `wait`, then at its `waitUntil`. */
export function dueAfterWait(
  node: StepNode,
  traits: JsonObject,
  workspaceTz: string,
  fromMs: number,
): number {
  const after = fromMs + (node.wait ?? 0);
  if (node.waitUntil === undefined) return after;
  return nextLocalTime(after, node.waitUntil, customerTimeZone(traits, workspaceTz));
}

/**
 * How long a customer can be in the journey after it starts: the longest path of waits (a
 * `waitUntil` counts as a day) plus its action's relevance (30 days without one).
 */
export function horizonOf(node: StepNode): number {
  const own = (node.wait ?? 0) + (node.waitUntil === undefined ? 0 : DAY);
  const action = node.action === undefined ? 0 : (node.action.relevance ?? 30 * DAY);
  const arms = Math.max(0, ...(node.branches ?? []).map(horizonOf));
  return own + Math.max(action, arms);
}

export interface ArmChoice {
  /** The arm taken, by index; undefined when none holds. */
  index: number | undefined;
  /** Conditions that failed to evaluate (counted as not holding), by path. */
  errors: { path: string; error: string }[];
}

/** The first arm of the branches at `path` whose `when` holds (the otherwise when none before it does). */
export function chooseArm(
  journey: JourneyConfig,
  compiled: Map<string, Condition | undefined>,
  path: readonly number[],
  bindings: Bindings,
): ArmChoice {
  const arms = nodeAt(journey, path)?.branches ?? [];
  const errors: ArmChoice["errors"] = [];
  for (const [i] of arms.entries()) {
    const key = [...path, i].join(".");
    const when = compiled.get(key);
    if (when === undefined) return { index: i, errors };
    const v = when(bindings);
    if (!v.ok) errors.push({ path: key, error: v.error });
    else if (v.value) return { index: i, errors };
  }
  return { index: undefined, errors };
}
