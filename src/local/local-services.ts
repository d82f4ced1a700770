import { resolve } from "node:path";
import { type Config, isAwsMode, LOCAL_DEFAULTS, StoreKind } from "../config.js";
import type { Logger } from "../log.js";
import { SupervisedDynamoDbLocal } from "./dynamodb-supervisor.js";
import { LocalKms } from "./kms-endpoint.js";

/** Local stand-ins started for a config, and the endpoints to use. */
export interface LocalServices {
  dynamodbEndpoint: string | undefined;
  kmsEndpoint: string | undefined;
  startedDynamo: boolean;
  startedKms: boolean;
  stop(): Promise<void>;
}

/**
 * Starts DynamoDB Local (supervised: restarted if it dies) and the local KMS
 * endpoint where local mode needs them: not in AWS mode, and not where an
 * endpoint was given.
 */
export async function startLocalServices(config: Config, log: Logger): Promise<LocalServices> {
  const aws = isAwsMode(config);
  const dataDir = resolve(config.dataDir);
  const stops: (() => Promise<void>)[] = [];
  const stop = async () => {
    for (const fn of stops.reverse()) await fn();
    stops.length = 0;
  };
  try {
    let dynamodbEndpoint = config.dynamodbEndpoint;
    let kmsEndpoint = config.kmsEndpoint;
    const startDynamo = config.store === StoreKind.dynamodb && dynamodbEndpoint === undefined && !aws;
    const startKms = config.store === StoreKind.dynamodb && kmsEndpoint === undefined && !aws;
    if (startDynamo) {
      const ddb = await SupervisedDynamoDbLocal.start({ dataDir }, log);
      stops.push(() => ddb.stop());
      dynamodbEndpoint = ddb.endpoint;
    }
    if (startKms) {
      const kms = LocalKms.start({ dataDir: resolve(dataDir, "kms"), region: config.region ?? LOCAL_DEFAULTS.region });
      stops.push(() => kms.stop());
      kmsEndpoint = kms.endpoint;
    }
    return { dynamodbEndpoint, kmsEndpoint, startedDynamo: startDynamo, startedKms: startKms, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
