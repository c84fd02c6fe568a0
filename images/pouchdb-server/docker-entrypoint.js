// Like the official couchdb image: COUCHDB_USER / COUCHDB_PASSWORD become the server
// admin on first start (pouchdb-server hashes a clear-text admin password it finds in
// its config file), then pouchdb-server runs in the foreground on port 5984.
'use strict';
const fs = require('fs');
const path = require('path');

const dataDir = process.cwd();
const configFile = path.join(dataDir, 'config.json');
const config = fs.existsSync(configFile) ? JSON.parse(fs.readFileSync(configFile, 'utf8')) : {};
const user = process.env.COUCHDB_USER;
const password = process.env.COUCHDB_PASSWORD;
if (user && password && !(config.admins && config.admins[user])) {
  config.admins = Object.assign({}, config.admins, { [user]: password });
}
config.log = Object.assign({ file: path.join(dataDir, 'log.txt') }, config.log);
fs.writeFileSync(configFile, JSON.stringify(config, null, 2), { mode: 0o600 });

process.argv = [process.argv[0], 'pouchdb-server',
  '--host', '0.0.0.0', '--port', '5984',
  '--dir', path.join(dataDir, 'db'), '--config', configFile];
fs.mkdirSync(path.join(dataDir, 'db'), { recursive: true });
// pouchdb-server 4.2.0 dies of an unhandled rejection when a replication fails (a peer's
// 401, a replication document deleted while it runs): with a full mesh one bad peer would
// crash-loop every node. Log it and keep serving; the replication shows as failed.
process.on('unhandledRejection', (reason) => {
  console.error('[error] unhandled rejection, server kept running:', reason);
});
// As PID 1, node ignores SIGTERM unless told: docker stop would wait 10 s and kill.
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
require('/opt/pouchdb-server/node_modules/pouchdb-server/bin/pouchdb-server');
