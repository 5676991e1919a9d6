/** Profile lookups through identity's `ProfileService` (suppression, segmentation's branches). */
import * as grpc from "@grpc/grpc-js";
import { ProfileService, type Profile } from "@kairos/contracts";
import { createGrpcClient } from "./grpc-client.js";

/** Where a service finds a customer's current profile. */
export interface ProfileLookup {
  /**
   * The profile (at `minVersion` or later when given), or undefined when identity has none
   * by that id. Throws when identity is unavailable.
   */
  get(workspace: string, profileId: string, minVersion?: bigint): Promise<Profile | undefined>;
  close(): void;
}

/**
 * A `ProfileLookup` over identity's gRPC `ProfileService.GetProfile`, by
 * `profile_id`. NOT_FOUND means no such profile; any other failure (identity
 * down, deadline exceeded) is thrown, so the intent is retried with backoff.
 */
export function grpcProfileLookup(address: string, timeoutMs = 2000): ProfileLookup {
  const client = createGrpcClient(ProfileService, address);
  return {
    async get(workspace, profileId, minVersion = 0n) {
      try {
        const res = await client.getProfile(
          { workspace, identifier: { type: "profile_id", value: profileId }, minVersion },
          { timeoutMs },
        );
        return res.profile;
      } catch (e) {
        if ((e as { code?: unknown }).code === grpc.status.NOT_FOUND) return undefined;
        throw e;
      }
    },
    close: () => client.close(),
  };
}
