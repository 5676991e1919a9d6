/** The segmentation service's public surface. */
export {
  configSpec,
  startSegmentation,
  type SegmentationConfig,
  type SegmentationHandle,
} from "./service.js";
export { compileCondition, bindingsOf, toCel, type Condition, type Verdict } from "./conditions.js";
export {
  actionIdFor,
  compileWorkspace,
  evaluate,
  renderPayload,
  emptyState,
  type MembershipState,
  type Plan,
} from "./plan.js";
