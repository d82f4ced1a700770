import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { type AwsCredentials, iamAuth, signGetCallerIdentity } from "../../client/iam.js";
import { KvClient } from "../../client/kv-client.js";
import type { AuthSettings } from "../../src/auth/authenticator.js";
import { normaliseArn } from "../../src/auth/iam-verifier.js";
import { freePort, waitForPort } from "../../src/local/free-port.js";
import { ErrorCode, KvError } from "../../src/wire/errors.js";
import { decodeIamCredential, encodeIamCredential, SERVER_ID_HEADER } from "../../src/wire/iam-credential.js";
import { startTestServer } from "../support/harness.js";

/**
 * IAM authentication against moto's STS and IAM: an implementation we did
 * not write checks the client's SigV4 signature (moto enforces signatures
 * once INITIAL_NO_AUTH_ACTION_COUNT unauthenticated actions have run: the
 * setup's four), and answers GetCallerIdentity with the signer's ARN.
 */

setDefaultTimeout(60_000);

const motoBin = Bun.which("moto_server");
let moto: Subprocess | undefined;
let sts = "";
let user: AwsCredentials;
let role: AwsCredentials;
const SERVER_ID = "kvs-iam-test";
const ACCOUNT = "123456789012";

const dir = mkdtempSync(join(tmpdir(), "kvs-iam-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** One IAM or STS query action, unsigned (moto accepts those until its count runs out); its XML answer. */
async function action(params: Record<string, string>, service: "iam" | "sts"): Promise<string> {
  const res = await fetch(`${sts}/`, {
    method: "POST",
    headers: {
      "content-type": "application/x-www-form-urlencoded",
      // moto routes by the credential scope's service; the signature is not checked yet.
      authorization: `AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/${service}/aws4_request, SignedHeaders=host, Signature=${"0".repeat(64)}`,
    },
    body: new URLSearchParams(params).toString(),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${params.Action} failed: ${text}`);
  return text;
}

const tag = (xml: string, name: string) => new RegExp(`<${name}>([^<]+)</${name}>`).exec(xml)?.[1] as string;

beforeAll(async () => {
  if (motoBin === null) return;
  const port = await freePort();
  moto = Bun.spawn([motoBin, "-H", "127.0.0.1", "-p", String(port)], {
    stdout: "ignore",
    stderr: "ignore",
    env: { ...process.env, INITIAL_NO_AUTH_ACTION_COUNT: "4" },
  });
  let exited = false;
  void moto.exited.then(() => {
    exited = true;
  });
  await waitForPort("127.0.0.1", port, 30_000, () => !exited);
  sts = `http://127.0.0.1:${port}`;
  await action({ Action: "CreateUser", UserName: "app", Version: "2010-05-08" }, "iam");
  const key = await action({ Action: "CreateAccessKey", UserName: "app", Version: "2010-05-08" }, "iam");
  user = { accessKeyId: tag(key, "AccessKeyId"), secretAccessKey: tag(key, "SecretAccessKey") };
  const trust = JSON.stringify({
    Version: "2012-10-17",
    Statement: [{ Effect: "Allow", Principal: { AWS: `arn:aws:iam::${ACCOUNT}:root` }, Action: "sts:AssumeRole" }],
  });
  await action(
    { Action: "CreateRole", RoleName: "reader-svc", AssumeRolePolicyDocument: trust, Version: "2010-05-08" },
    "iam",
  );
  const assumed = await action(
    {
      Action: "AssumeRole",
      RoleArn: `arn:aws:iam::${ACCOUNT}:role/reader-svc`,
      RoleSessionName: "task-1234",
      Version: "2011-06-15",
    },
    "sts",
  );
  role = {
    accessKeyId: tag(assumed, "AccessKeyId"),
    secretAccessKey: tag(assumed, "SecretAccessKey"),
    sessionToken: tag(assumed, "SessionToken"),
  };
});
afterAll(async () => {
  moto?.kill();
  await moto?.exited;
});

/** Server settings accepting IAM credentials for SERVER_ID from moto's STS, with a policy for the app and the role. */
function iamSettings(): AuthSettings {
  const policyFile = join(dir, `policy-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(
    policyFile,
    JSON.stringify({
      rules: [
        { identity: `arn:aws:iam::${ACCOUNT}:user/app`, read: ["app/*"], write: ["app/*"] },
        { identity: `arn:aws:iam::${ACCOUNT}:role/reader-*`, read: ["*"] },
      ],
    }),
  );
  return { policyFile, iamServerId: SERVER_ID, iamRegions: ["us-east-1"], iamStsEndpoints: [sts] };
}

function signed(creds: AwsCredentials, serverId = SERVER_ID, at = new Date(), endpoint = `${sts}/`): string {
  return encodeIamCredential(signGetCallerIdentity({ serverId, region: "us-east-1", endpoint }, creds, at));
}

/** A credential whose signed request `edit` changed after signing. */
function edited(credential: string, edit: (r: ReturnType<typeof signGetCallerIdentity>) => void): string {
  const request = decodeIamCredential(credential);
  if (typeof request === "string") throw new Error(request);
  edit(request);
  return encodeIamCredential(request);
}

async function refusal(credential: string, port: number): Promise<KvError> {
  await using client = await KvClient.connect({ port });
  try {
    await client.authenticate({ credential: () => credential });
  } catch (err) {
    if (err instanceof KvError) return err;
    throw err;
  }
  throw new Error("the credential was accepted");
}

describe.skipIf(motoBin === null)("IAM authentication against moto's STS", () => {
  test("a user's signed GetCallerIdentity authenticates as the user's ARN, held to its rules", async () => {
    await using server = await startTestServer({ auth: iamSettings() });
    await using client = await KvClient.connect({
      port: server.port,
      auth: iamAuth({ serverId: SERVER_ID, region: "us-east-1", endpoint: `${sts}/`, credentials: user }),
    });
    expect(client.identity).toBe(`arn:aws:iam::${ACCOUNT}:user/app`);
    await client.set("app/x", "1");
    let denied: unknown;
    try {
      await client.set("other/x", "1");
    } catch (err) {
      denied = err;
    }
    expect((denied as KvError).code).toBe(ErrorCode.Forbidden);
  });

  test("an assumed role's session authenticates as its role, as ECS tasks and Lambda functions do", async () => {
    await using server = await startTestServer({ auth: iamSettings() });
    await using client = await KvClient.connect({
      port: server.port,
      auth: iamAuth({ serverId: SERVER_ID, region: "us-east-1", endpoint: `${sts}/`, credentials: async () => role }),
    });
    expect(client.identity).toBe(`arn:aws:iam::${ACCOUNT}:role/reader-svc`);
    expect(await client.get("app/none")).toBeUndefined();
  });

  test("tampered, unbound, misbound, stale, foreign-host and replayed credentials are all refused, with reasons", async () => {
    await using server = await startTestServer({ auth: iamSettings() });
    const good = signed(user);
    const tampered = edited(good, (r) => {
      r.headers.authorization = (r.headers.authorization as string).replace(/.$/, (c) => (c === "0" ? "1" : "0"));
    });
    expect((await refusal(tampered, server.port)).message).toContain("STS refused it: SignatureDoesNotMatch");
    const unbound = edited(good, (r) => {
      delete r.headers[SERVER_ID_HEADER];
      r.headers.authorization = (r.headers.authorization as string).replace(`;${SERVER_ID_HEADER}`, "");
    });
    expect((await refusal(unbound, server.port)).message).toContain("does not cover the x-kvs-server-id header");
    const misbound = signed(user, "another-server");
    expect((await refusal(misbound, server.port)).message).toContain('signed for server id "another-server"');
    const stale = signed(user, SERVER_ID, new Date(Date.now() - 20 * 60 * 1000));
    expect((await refusal(stale, server.port)).message).toContain("more than 15 minutes");
    const foreign = signed(user, SERVER_ID, new Date(), "https://sts.evil.example.com/");
    expect((await refusal(foreign, server.port)).message).toContain("is not an STS endpoint this server accepts");
    const otherAction = edited(good, (r) => {
      r.body = "Action=AssumeRole&Version=2011-06-15";
    });
    expect((await refusal(otherAction, server.port)).message).toContain("the body must be");
    for (const credential of [tampered, unbound, misbound, stale, foreign, otherAction]) {
      expect((await refusal(credential, server.port)).code).toBe(ErrorCode.Unauthenticated);
    }
  });

  test("a credential signed for one server cannot be replayed to a server of another id", async () => {
    const other = { ...iamSettings(), iamServerId: "kvs-other" };
    await using server = await startTestServer({ auth: other });
    // The thief rewrites the id to the other server's: the signature no longer holds, and STS says so.
    const replayed = edited(signed(user), (r) => {
      r.headers[SERVER_ID_HEADER] = "kvs-other";
    });
    const err = await refusal(replayed, server.port);
    expect(err.code).toBe(ErrorCode.Unauthenticated);
    expect(err.message).toContain("SignatureDoesNotMatch");
  });

  test("the presigned credential works as an HTTP bearer token", async () => {
    await using server = await startTestServer({ httpPort: 0, auth: iamSettings() });
    const headers = { authorization: `Bearer ${signed(user)}` };
    const put = await fetch(`http://127.0.0.1:${server.httpPort}/v1/keys/app%2Fh`, {
      method: "PUT",
      body: "v",
      headers,
    });
    expect(put.status).toBe(204);
    const got = await fetch(`http://127.0.0.1:${server.httpPort}/get?k=app/h`, { headers });
    expect(await got.text()).toBe("v");
  });

  test("reconnects reuse a verified credential without STS, so an STS outage stops only new credentials", async () => {
    await using server = await startTestServer({ auth: iamSettings() });
    const auth = iamAuth({ serverId: SERVER_ID, region: "us-east-1", endpoint: `${sts}/`, credentials: user });
    {
      await using first = await KvClient.connect({ port: server.port, auth });
      await first.set("app/k", "1");
    }
    moto?.kill();
    await moto?.exited;
    await using again = await KvClient.connect({ port: server.port, auth });
    expect(again.identity).toBe(`arn:aws:iam::${ACCOUNT}:user/app`);
    // A minute back: a different second from the one iamAuth signed at, so a credential the server has not seen.
    const fresh = await refusal(signed(user, SERVER_ID, new Date(Date.now() - 60_000)), server.port);
    expect(fresh.code).toBe(ErrorCode.Unavailable);
    expect(fresh.message).toContain("STS could not be reached");
  });
});

describe("assumed-role ARNs", () => {
  test("become their role's ARN; other ARNs are kept", () => {
    expect(normaliseArn("arn:aws:sts::111122223333:assumed-role/orders-task/abc123")).toBe(
      "arn:aws:iam::111122223333:role/orders-task",
    );
    expect(normaliseArn("arn:aws-cn:sts::111122223333:assumed-role/r/s")).toBe("arn:aws-cn:iam::111122223333:role/r");
    expect(normaliseArn("arn:aws:iam::111122223333:user/app")).toBe("arn:aws:iam::111122223333:user/app");
  });
});
