/** Test kit: real servers and processes for tests. */
export * from "./free-port.js";
export * from "./child-process.js";
export * from "./nats-server.js";
export * from "./wait.js";
export * from "./mesh.js";
export * from "./collect.js";
