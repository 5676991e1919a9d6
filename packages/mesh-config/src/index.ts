/** The declarative mesh configuration (write keys, segments, journeys, channels). */
export * from "./schema.js";
export * from "./load.js";
export * from "./kv.js";
