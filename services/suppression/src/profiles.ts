/** Profile lookups for suppression, through identity's `ProfileService`. */
import * as grpc from "@grpc/grpc-js";
import { ProfileService, type Profile } from "@kairos/contracts";
import { createGrpcClient } from "@kairos/kit";

export interface ProfileLookup {
  /** The profile, or undefined when identity has none by that id. Throws when identity is unavailable. */
  get(workspace: string, profileId: string): Promise<Profile | undefined>;
  close(): void;
}

export function grpcProfileLookup(address: string): ProfileLookup {
  const client = createGrpcClient(ProfileService, address);
  return {
    async get(workspace, profileId) {
      try {
        const res = await client.getProfile({
          workspace,
          identifier: { type: "profile_id", value: profileId },
        });
        return res.profile;
      } catch (e) {
        if ((e as { code?: number }).code === grpc.status.NOT_FOUND) return undefined;
        throw e;
      }
    },
    close: () => client.close(),
  };
}
