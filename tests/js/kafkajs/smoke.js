// kafkajs against a RobustMQ Kafka listener: produce 100 keyed messages, read them back
// in a consumer group, create, list and delete a topic with the admin client, and print
// one JSON line with what happened (tests/integration/test_kafkajs.py checks it).
// Usage: node smoke.js HOST:PORT, with KAFKA_SASL_MECHANISM (plain or scram-sha-256),
// KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD in the environment to authenticate.
'use strict';

const { Kafka, logLevel } = require('kafkajs');

const TIMEOUT_MS = 30000;

async function main() {
  const broker = process.argv[2];
  if (!broker) {
    throw new Error('usage: node smoke.js HOST:PORT');
  }
  const kafka = new Kafka({
    clientId: 'robustmq-smoke',
    brokers: [broker],
    logLevel: logLevel.ERROR,
    retry: { retries: 5 },
    sasl: process.env.KAFKA_SASL_MECHANISM
      ? {
          mechanism: process.env.KAFKA_SASL_MECHANISM,
          username: process.env.KAFKA_SASL_USERNAME,
          password: process.env.KAFKA_SASL_PASSWORD,
        }
      : undefined,
  });
  const result = {};

  const admin = kafka.admin();
  await admin.connect();
  result.created = await admin.createTopics({
    topics: [{ topic: 'js-data', numPartitions: 3 }, { topic: 'js-admin', numPartitions: 2 }],
    waitForLeaders: true,
  });
  result.listed = (await admin.listTopics()).sort();

  const producer = kafka.producer();
  await producer.connect();
  const messages = [];
  for (let i = 0; i < 100; i++) {
    messages.push({ key: `key-${i % 10}`, value: `value-${i}`, headers: { n: String(i) } });
  }
  const acks = await producer.send({ topic: 'js-data', messages });
  result.produce_errors = acks.filter((a) => a.errorCode !== 0).length;
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: 'js-group' });
  await consumer.connect();
  await consumer.subscribe({ topic: 'js-data', fromBeginning: true });
  const received = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`consumed ${received.length} of 100 in ${TIMEOUT_MS} ms`)),
      TIMEOUT_MS,
    );
    consumer
      .run({
        eachMessage: async ({ partition, message }) => {
          received.push({
            partition,
            offset: Number(message.offset),
            key: message.key.toString(),
            value: message.value.toString(),
            n: message.headers.n.toString(),
          });
          if (received.length === 100) {
            clearTimeout(timer);
            resolve();
          }
        },
      })
      .catch(reject);
  });
  await consumer.disconnect();
  result.consumed = received;

  const offsets = await admin.fetchOffsets({ groupId: 'js-group', topics: ['js-data'] });
  result.committed = offsets[0].partitions
    .map((p) => ({ partition: p.partition, offset: Number(p.offset) }))
    .sort((a, b) => a.partition - b.partition);
  await admin.deleteTopics({ topics: ['js-admin'] });
  result.after_delete = (await admin.listTopics()).sort();
  await admin.disconnect();

  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((err) => {
  process.stderr.write(`kafkajs smoke failed: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
