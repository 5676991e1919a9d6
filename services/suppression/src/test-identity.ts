/**
 * For tests: a small identity `ProfileService` over real gRPC loopback, serving
 * fixed profiles by profile id (identity itself is its own package).
 */
import * as grpc from "@grpc/grpc-js";
import { trace } from "@opentelemetry/api";
import { create, type JsonObject } from "@bufbuild/protobuf";
import { ProfileSchema, ProfileService, type Profile } from "@kairos/contracts";
import { createLogger, GrpcError, implement, Metrics, startGrpcServer, type GrpcServer } from "@kairos/kit";

/** A profile of workspace `ws` with a user id and an email derived from its id. */
export function testProfile(id: string, traits: JsonObject = {}, workspace = "ws"): Profile {
  return create(ProfileSchema, {
    workspace,
    profileId: id,
    version: 1n,
    identifiers: [
      { type: "user_id", value: `u-${id}` },
      { type: "email", value: `${id}@example.com` },
    ],
    traits,
  });
}

export interface TestIdentity {
  server: GrpcServer;
  /** Profiles by id; add or change them while the test runs. */
  profiles: Map<string, Profile>;
  /** Profiles merged away, answered with their survivor (as identity does). */
  mergedInto: Map<string, string>;
  /** Lookups of these profile ids fail with UNAVAILABLE this many more times. */
  unavailable: Map<string, number>;
  /** Lookups per profile id. */
  lookups: Map<string, number>;
}

export async function startTestIdentity(profiles: Profile[] = []): Promise<TestIdentity> {
  const t = {
    profiles: new Map(profiles.map((p) => [p.profileId, p])),
    mergedInto: new Map<string, string>(),
    unavailable: new Map<string, number>(),
    lookups: new Map<string, number>(),
  };
  const server = await startGrpcServer({
    service: "test-identity",
    host: "127.0.0.1",
    port: 0,
    tracer: trace.getTracer("test-identity"),
    metrics: new Metrics("test-identity"),
    logger: createLogger({ service: "test-identity", level: "silent" }),
    registrations: [
      implement(ProfileService, {
        getProfile: (req) => {
          const id = req.identifier?.value ?? "";
          t.lookups.set(id, (t.lookups.get(id) ?? 0) + 1);
          const failures = t.unavailable.get(id) ?? 0;
          if (failures > 0) {
            t.unavailable.set(id, failures - 1);
            throw new GrpcError(grpc.status.UNAVAILABLE, "identity is restarting");
          }
          const profile =
            req.identifier?.type === "profile_id" ? t.profiles.get(t.mergedInto.get(id) ?? id) : undefined;
          if (profile === undefined || profile.workspace !== req.workspace) {
            throw new GrpcError(grpc.status.NOT_FOUND, "no such profile");
          }
          return { profile };
        },
        batchGetProfiles: () => ({}),
        deleteProfile: () => {
          throw new GrpcError(grpc.status.UNIMPLEMENTED, "not in this test");
        },
        unmergeProfile: () => {
          throw new GrpcError(grpc.status.UNIMPLEMENTED, "not in this test");
        },
      }),
    ],
  });
  server.setServing();
  return { server, ...t };
}
