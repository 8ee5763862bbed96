#!/usr/bin/env node
// recpipe example client in Node: Recommend and Feedback against a running gateway.
// Ids are sent as JavaScript numbers (exact up to 2^53). The API is loaded from the project's protos/ at run time by @grpc/proto-loader.
//
//   npm install --prefix examples/node
//   node examples/node/recommend.js --target 127.0.0.1:50050 --user 1
//   node examples/node/recommend.js --user 1 --feedback 1,2,3 --type click
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const EVENT_TYPES = { view: 1, click: 2, add_to_cart: 3, purchase: 4, rating: 5, dismiss: 6 };

function parseArgs(argv) {
  const args = { target: '127.0.0.1:50050', user: 0, count: 10, feedback: '', type: 'click',
                 value: 0, timeout: 2, protos: path.join(__dirname, '..', '..', 'protos') };
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(argv[i]);
    if (!m || !(m[1] in args)) {
      console.error(`recommend.js: unknown argument ${argv[i]}\nusage: recommend.js --user ID ` +
                    '[--target ADDR] [--count N] [--feedback ID,ID...] [--type click] [--value V]');
      process.exit(2);
    }
    const v = m[2] !== undefined ? m[2] : argv[++i];
    args[m[1]] = typeof args[m[1]] === 'number' ? Number(v) : v;
  }
  if (!args.user) {
    console.error('recommend.js: --user is required');
    process.exit(2);
  }
  if (!(args.type in EVENT_TYPES)) {
    console.error(`recommend.js: --type: one of ${Object.keys(EVENT_TYPES).join(', ')}`);
    process.exit(2);
  }
  return args;
}

function call(client, method, req, timeoutS) {
  return new Promise((resolve, reject) => {
    client[method](req, { deadline: Date.now() + timeoutS * 1000 }, (err, resp) =>
      err ? reject(err) : resolve(resp));
  });
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const def = protoLoader.loadSync('recpipe/v1/recommender.proto', {
    includeDirs: [args.protos], keepCase: true, longs: String, enums: String, defaults: true,
  });
  const api = grpc.loadPackageDefinition(def).recpipe.v1;
  const client = new api.Recommender(args.target, grpc.credentials.createInsecure());
  try {
    if (args.feedback) {
      const now = Math.floor(Date.now() / 1000);
      const events = args.feedback.split(',').filter(Boolean).map((id) => ({
        user_id: args.user, item_id: Number(id), type: EVENT_TYPES[args.type],
        value: args.value, timestamp: now,
      }));
      const r = await call(client, 'Feedback', { events }, args.timeout);
      console.log(`feedback: stored ${r.stored} event(s), ${r.unknown_items} for items not in the bundle`);
    }
    const r = await call(client, 'Recommend',
                         { user_id: args.user, count: args.count, debug: true }, args.timeout);
    const flags = r.degraded.length ? ` degraded: ${r.degraded.join(', ')}` : '';
    const cost = r.cache_hit ? 'cache hit' : `${r.timings ? r.timings.total_us : 0} us`;
    console.log(`user ${args.user}: ${r.items.length} item(s), request ${r.request_id}, ${cost}${flags}`);
    r.items.forEach((it, n) => {
      console.log(`${String(n + 1).padStart(3)}. ${it.title.slice(0, 60).padEnd(60)} ` +
                  `${it.categories.join('|').slice(0, 28).padEnd(28)} ${it.score.toFixed(3)} ${it.explanation}`);
    });
  } catch (err) {
    console.error(`recommend.js: ${grpc.status[err.code] || err.code}: ${err.details || err.message}`);
    process.exitCode = 1;
  } finally {
    client.close();
  }
}

main();
