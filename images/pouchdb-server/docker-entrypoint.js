// The image's entrypoint, and the preload of the tests' pouchdb-server processes
// (tests/support/pouchdb.py runs `node --require` this file), so both run the same server.
//
// Always: pouchdb-server's replications survive a peer that goes away (its outgoing HTTP
// below); with an admin it refuses what CouchDB 3 refuses (6.); no request ends it (7.).
// Only as the entrypoint (require.main): the container set-up further down.
'use strict';

const http = require('http');
const https = require('https');

// 1. A response cut short must fail its request. pouchdb-fetch pins node-fetch 2.6.7, which
//    pipes a response into a PassThrough and never passes on an abort, so when a peer's
//    process exits in the middle of a body (its replication's long-poll _changes, always
//    open), the fetch promise stays pending for good: no error, so pouchdb's retry never
//    runs and the replication stays "triggered" and idle (measured: not resumed 300 s after
//    the peer was back). node-fetch 2.6.8 fixed it upstream ("Premature close"). Here the
//    streams a cut-short response is piped into are destroyed, the last with the error.
//    IncomingMessage is also what the server reads a request from: a request body a client
//    cuts short and body-parser pipes into zlib (a compressed one) fails the same way.
const pipe = http.IncomingMessage.prototype.pipe;
http.IncomingMessage.prototype.pipe = function pipeFailingOnCutShort(destination, options) {
  this.once('close', () => {
    if (!this.complete) {
      const error = new Error(`response cut short: ${this.req ? this.req.host : 'peer'} closed the connection`);
      error.code = 'ERR_STREAM_PREMATURE_CLOSE';
      fail(destination, error);
    }
  });
  return pipe.call(this, destination, options);
};

// Downstream first. Only the last stream carries the error (its reader rejects); one in
// between is destroyed without it, since the error listener pipe() puts on it would rethrow.
function fail(stream, error) {
  if (stream.destroyed) {
    return;
  }
  const state = stream._readableState;
  const next = [].concat((state && state.pipes) || []);
  for (const downstream of next) {
    fail(downstream, error);
  }
  if (next.length > 0) {
    stream.destroy();
    return;
  }
  stream.on('error', () => {}); // nobody reading it must not end the process
  stream.destroy(error);
}

// 2. A peer that vanished without closing (a partition, a host down) must not hold a request
//    open for good either: TCP keep-alive probes an idle connection after this delay and
//    drops it when the peer stays silent (libuv: 10 probes 1 s apart). The long-poll's own
//    heartbeat (a newline every 10 s from the peer) keeps a live one busy.
const KEEPALIVE_DELAY_MS = Number(process.env.KUNO_PEER_KEEPALIVE_MS || 10000);
for (const agent of [http.Agent, https.Agent]) {
  const createConnection = agent.prototype.createConnection;
  agent.prototype.createConnection = function createConnectionWithKeepAlive(...args) {
    const socket = createConnection.apply(this, args);
    if (socket && typeof socket.setKeepAlive === 'function') {
      socket.setKeepAlive(true, KEEPALIVE_DELAY_MS);
    }
    return socket;
  };
}

// 3. Outgoing connections are reused. node-fetch asks for `Connection: close` whenever it is
//    given no agent (pouchdb never gives one), so every replication request (_changes,
//    _revs_diff, _bulk_get, _bulk_docs, checkpoints: ~15 per message written) opened a
//    new TCP connection. Such requests get a keep-alive agent instead. They no longer ask
//    for gzip either (node-fetch's default): the peer compressed every _changes response
//    (streamed, so above any size threshold) for this side to inflate it again, 9% of the
//    servers' CPU under replication (profiled), to save bytes on a local network.
const reusingAgents = {
  'http:': new http.Agent({ keepAlive: true, keepAliveMsecs: KEEPALIVE_DELAY_MS }),
  'https:': new https.Agent({ keepAlive: true, keepAliveMsecs: KEEPALIVE_DELAY_MS }),
};
for (const [module, protocol] of [[http, 'http:'], [https, 'https:']]) {
  const request = module.request;
  module.request = function requestReusingConnections(options, ...rest) {
    const headers = options && options.headers;
    const connection = headers && headers.Connection;
    if (options.agent === undefined && String(connection).toLowerCase() === 'close') {
      delete headers.Connection;
      options.agent = reusingAgents[options.protocol || protocol];
      delete headers['Accept-Encoding'];
    }
    return request.call(this, options, ...rest);
  };
}

// 4. Replication checkpoints at most every KUNO_CHECKPOINT_INTERVAL_MS, as CouchDB's
//    replicator does (`[replicator] checkpoint_interval`, 30 s by default). pouchdb writes
//    one after every batch: a GET and a PUT of a _local document on the target and on the
//    source, 4 of the ~6 requests a replicated change costs here, once per message and
//    replication. A checkpoint asked for sooner is kept and written when the interval is
//    up (the newest one wins); writes stay in order. A replication that restarts reads
//    again, at most, the changes of the last interval: they are already there, so
//    _revs_diff lets them pass. 0 writes every checkpoint, as pouchdb does.
const CHECKPOINT_INTERVAL_MS = Number(process.env.KUNO_CHECKPOINT_INTERVAL_MS || 30000);
if (CHECKPOINT_INTERVAL_MS > 0) {
  const Checkpointer = require(require.resolve('pouchdb-checkpointer', {
    paths: [require.resolve('pouchdb-replication')],
  }));
  const writeCheckpoint = Checkpointer.prototype.writeCheckpoint;
  Checkpointer.prototype.writeCheckpoint = function writeCheckpointAtInterval(checkpoint, session) {
    const write = () => {
      this.lastCheckpointAt = Date.now();
      this.checkpointWrites = (this.checkpointWrites || Promise.resolve())
        .catch(() => {})
        .then(() => writeCheckpoint.call(this, checkpoint, session));
      return this.checkpointWrites;
    };
    const due = (this.lastCheckpointAt || 0) + CHECKPOINT_INTERVAL_MS - Date.now();
    if (due <= 0) {
      clearTimeout(this.checkpointTimer);
      this.checkpointTimer = undefined;
      return write();
    }
    this.nextCheckpoint = write;
    if (this.checkpointTimer === undefined) {
      this.checkpointTimer = setTimeout(() => {
        this.checkpointTimer = undefined;
        // A failure here is the next one's to report: the replication goes on meanwhile.
        this.nextCheckpoint().catch(() => {});
      }, due);
      this.checkpointTimer.unref();
    }
    return Promise.resolve();
  };
}

// 5. A database's disk size is measured at most every KUNO_DISK_SIZE_CACHE_MS (0: on every
//    info(), as pouchdb-size does). pouchdb-size walks the database's directory (a readdir
//    and an lstat per file) on every info(), and express-pouchdb builds each request's
//    session with an info() of _users: that walk was 13% of the server's CPU under
//    replication (profiled). `disk_size` in a database's info may be that much older;
//    CouchDB's own sizes are estimates too.
const DISK_SIZE_CACHE_MS = Number(process.env.KUNO_DISK_SIZE_CACHE_MS || 5000);
if (DISK_SIZE_CACHE_MS > 0) {
  const pouchdbSize = require(require.resolve('pouchdb-size', {
    paths: [require.resolve('express-pouchdb')],
  }));
  const getDiskSize = pouchdbSize.getDiskSize;
  const measured = new Map(); // database path -> { at, size (a promise) }
  pouchdbSize.getDiskSize = function getDiskSizeCached(callback) {
    const key = `${(this.__opts && this.__opts.prefix) || ''}${this.name}`;
    let entry = measured.get(key);
    if (entry === undefined || Date.now() - entry.at > DISK_SIZE_CACHE_MS) {
      entry = { at: Date.now(), size: Promise.resolve(getDiskSize.call(this)) };
      measured.set(key, entry);
      const failed = entry;
      entry.size.catch(() => measured.get(key) === failed && measured.delete(key));
    }
    if (typeof callback === 'function') {
      entry.size.then((size) => callback(null, size), callback);
    }
    return entry.size;
  };
}

// 6. Once the server has an admin, it refuses what CouchDB 3 with admin-only databases
//    refuses. pouchdb-server 4.2 checks _security only where express-pouchdb hands the
//    database a user context: _find, _bulk_get and _index got none, so pouchdb-security took
//    an anonymous client for an admin and served it; an anonymous PUT /{db} or POST
//    /{db}/_index ended the process (`db.info is not a function`). This guard runs after
//    express-pouchdb's own authentication (Basic auth or the AuthSession cookie, checked
//    against the config's admins and _users: req.couchSession) and before every route:
//    - a server admin, or a server without admins (CouchDB's "admin party"): served;
//    - / , /_session (sign in and out), /_uuids, /_utils/*: open, as in CouchDB 3; so is
//      /_up, which pouchdb-server lacks (404: DESIGN.md's flavour table);
//    - anyone else on a server route (_all_dbs, _config, _replicate, _active_tasks, ...) or
//      creating or deleting a database: 401 "You are not a server admin.";
//    - on a database (_users and _replicator included): served when its _security names
//      the client as a member or database admin, or names no member at all (CouchDB's
//      public database; the deployment's are admin-only); else anonymous 401, signed-in
//      403, as CouchDB answers; creating or deleting an index needs a database admin.
const OPEN_ROUTES = new Set(['_up', '_session', '_uuids']); // these paths alone; /_utils/*
const SYSTEM_DATABASES = new Set(['_users', '_replicator']);

function expressPouchdbModule(name) {
  return require.resolve(`express-pouchdb/lib/${name}`, {
    paths: [require.resolve('pouchdb-server')],
  });
}

function installRefusingGuard(app) {
  const utils = require(expressPouchdbModule('utils'));
  const refuse = (res, status, reason) => utils.sendJSON(res, status, {
    error: status === 401 ? 'unauthorized' : 'forbidden', reason,
  });
  const isIn = (userCtx, section) => Boolean(section) && (
    (section.names || []).includes(userCtx.name)
    || (section.roles || []).some((role) => userCtx.roles.includes(role)));

  app.use(function requireWhatCouchDBRequires(req, res, next) {
    const admins = app.couchConfig.getSection('admins') || {};
    const userCtx = (req.couchSession && req.couchSession.userCtx) || { name: null, roles: [] };
    if (Object.keys(admins).length === 0 || userCtx.roles.includes('_admin')) {
      return next();
    }
    const segments = req.path.split('/').slice(1);
    let first;
    try {
      first = decodeURIComponent(segments[0]);
    } catch (error) {
      return refuse(res, 401, 'You are not a server admin.');
    }
    const open = req.path === '/' || first === '_utils'
      || (OPEN_ROUTES.has(first) && segments.slice(1).every((segment) => segment === ''));
    if (open) {
      return next();
    }
    const isDatabase = !first.startsWith('_') || SYSTEM_DATABASES.has(first);
    const createsOrDeletes = segments.filter(Boolean).length === 1
      && (req.method === 'PUT' || req.method === 'DELETE');
    if (!isDatabase || createsOrDeletes) {
      return refuse(res, 401, 'You are not a server admin.');
    }
    const anonymous = userCtx.name === null || userCtx.name === undefined;
    const needsDatabaseAdmin = segments[1] === '_index' && req.method !== 'GET' && req.method !== 'HEAD';
    return utils.setDBOnReq(first, app.dbWrapper, req, res, () => {
      req.db.getSecurity().then((security) => {
        const members = (security && security.members) || {};
        // _users and _replicator hold credentials: never public, as in CouchDB.
        const public_ = !SYSTEM_DATABASES.has(first)
          && (members.names || []).length === 0 && (members.roles || []).length === 0;
        if (isIn(userCtx, security && security.admins)
            || (!needsDatabaseAdmin && (public_ || isIn(userCtx, members)))) {
          return next();
        }
        if (anonymous) {
          return refuse(res, 401, 'You are not authorized to access this db.');
        }
        return needsDatabaseAdmin
          ? refuse(res, 401, 'You are not a db or server admin.')
          : refuse(res, 403, 'You are not allowed to access this db.');
      }).catch((error) => utils.sendError(res, error));
    });
  });
}

// express-pouchdb loads its parts with require('./routes/...') in a fixed order; the guard
// goes in with 'routes/authorization' (right after 'routes/authentication'), and a JSON
// answer for an error a route passes on (express's own is an HTML page) with 'routes/404',
// the last one.
function extendPart(name, extend) {
  const file = expressPouchdbModule(name);
  const install = require(file);
  require.cache[file].exports = function installExtended(app) {
    install(app);
    extend(app);
  };
}
extendPart('routes/authorization', installRefusingGuard);
extendPart('routes/404', (app) => {
  const utils = require(expressPouchdbModule('utils'));
  app.use((error, req, res, next) => { // eslint-disable-line no-unused-vars
    console.error('[error] request failed:', req.method, req.path, error);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const status = error.status || 500;
    utils.sendJSON(res, status, {
      error: status >= 500 ? 'unknown_error' : 'bad_request',
      reason: String(error.message || error),
    });
  });
});

// 7. No request ends the process. A route of pouchdb-server that leaves a rejection unhandled
//    (several do: a replication that fails on a peer's 401 or on its document deleted while
//    it runs; with a full mesh one bad peer crash-looped every node) ended the process under
//    node's default; the request it came from now gets CouchDB's 500
//    JSON (or its connection closed, when the answer had begun) and the server keeps
//    serving. Each request runs in an AsyncLocalStorage context, which the rejection's
//    handler sees; a rejection outside any request (a replication's) is logged.
const { AsyncLocalStorage } = require('async_hooks');
const currentRequest = new AsyncLocalStorage();
const emit = http.Server.prototype.emit;
http.Server.prototype.emit = function emitInRequestContext(event, ...args) {
  if (event === 'request') {
    return currentRequest.run({ response: args[1] }, () => emit.call(this, event, ...args));
  }
  return emit.call(this, event, ...args);
};
process.on('unhandledRejection', (reason) => {
  const request = currentRequest.getStore();
  const response = request && request.response;
  console.error('[error] unhandled rejection, server kept running:', reason);
  if (!response || response.writableEnded || response.destroyed) {
    return;
  }
  if (response.headersSent) {
    response.destroy();
    return;
  }
  const body = JSON.stringify({
    error: 'unknown_error',
    reason: String((reason && reason.message) || reason),
  });
  response.writeHead(500, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  response.end(body);
});

// 8. A _replicator document deleted and written again is a new job, as on CouchDB 3 (how
//    heal.yml, the watchdog and deploy.yml restart or restore a replication). pouchdb-replicator
//    got two things wrong here:
//    - it forgets a job's record (its body, by which it tells a duplicate document) only when
//      the deleted document names the job (_replication_id), which a DELETE's tombstone never
//      does: the document written again was taken for a duplicate of the job it had just
//      cancelled, and nothing ran (measured: no state, old _replication_id). The daemon's
//      feed of the database now hands it each tombstone with the job it ends.
//    - a cancelled job, once it completes, writes `completed` into the document of its id: a
//      404 (an unhandled rejection) after a delete, and the new document, when written again
//      meanwhile, marked `completed` with its new job no longer tracked. A job in its retry
//      back-off completes only when the back-off timer fires (up to 10 minutes later), so a
//      restart always met it (measured). The daemon's jobs (their options carry the
//      document's _replication_id) report nothing once cancelled.
function replicatorModule(name) {
  return require.resolve(name, { paths: [require.resolve('express-pouchdb')] });
}
const replicator = require(replicatorModule('pouchdb-replicator'));
const startReplicatorDaemon = replicator.startReplicatorDaemon;
replicator.startReplicatorDaemon = function startReplicatorDaemonEndingJobs(...args) {
  const db = this;
  const changes = db.changes;
  db.changes = function changesNamingEndedJobs(opts, ...rest) {
    const feed = changes.call(this, opts, ...rest);
    if (!(opts && opts.live && opts.include_docs)) {
      return feed;
    }
    db.changes = changes; // only the daemon's own feed, its first live one
    const jobs = new Map(); // document id -> the _replication_id of its job
    const on = feed.on;
    feed.on = function onNamingEndedJobs(event, listener) {
      if (event !== 'change') {
        return on.call(this, event, listener);
      }
      return on.call(this, event, (change) => {
        const doc = change.doc;
        if (doc && doc._deleted) {
          if (!doc._replication_id && jobs.has(doc._id)) {
            change = Object.assign({}, change, {
              doc: Object.assign({}, doc, { _replication_id: jobs.get(doc._id) }),
            });
          }
          jobs.delete(doc._id);
        } else if (doc && doc._replication_id) {
          jobs.set(doc._id, doc._replication_id);
        }
        return listener(change);
      });
    };
    return feed;
  };
  return startReplicatorDaemon.apply(db, args);
};
const replication = require(replicatorModule('pouchdb-replication'));
const replicationFile = replicatorModule('pouchdb-replication');
require.cache[replicationFile].exports = function installForgettingCancelled(PouchDB) {
  replication(PouchDB);
  const replicate = PouchDB.replicate;
  PouchDB.replicate = function replicateForgettingCancelled(source, target, opts, ...rest) {
    const job = replicate.call(this, source, target, opts, ...rest);
    if (opts && opts._replication_id && job && typeof job.then === 'function') {
      const then = job.then;
      const unlessCancelled = (callback) => callback && ((value) => (
        job.cancelled ? undefined : callback(value)));
      job.then = (resolve, reject) => then.call(job, unlessCancelled(resolve), unlessCancelled(reject));
      job.catch = (reject) => then.call(job, undefined, unlessCancelled(reject));
    }
    return job;
  };
};

// --- the container ---------------------------------------------------------------------
// Like the official couchdb image: COUCHDB_USER / COUCHDB_PASSWORD become the server
// admin on first start (pouchdb-server hashes a clear-text admin password it finds in
// its config file), then pouchdb-server runs in the foreground on port 5984.
function startContainerServer() {
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
  // pouchdb-server logs every request at info, then tails its own log file to stdout: with
  // replication that is ~15 lines per message written, parsed and shipped by Docker, for
  // a large share of the server's CPU. Warnings and errors only, unless asked.
  config.log = Object.assign({ file: path.join(dataDir, 'log.txt') }, config.log);
  config.log.level = process.env.POUCHDB_LOG_LEVEL || config.log.level || 'warning';
  fs.writeFileSync(configFile, JSON.stringify(config, null, 2), { mode: 0o600 });

  process.argv = [process.argv[0], 'pouchdb-server',
    '--host', '0.0.0.0', '--port', '5984',
    '--dir', path.join(dataDir, 'db'), '--config', configFile];
  fs.mkdirSync(path.join(dataDir, 'db'), { recursive: true });
  // As PID 1, node ignores SIGTERM unless told: docker stop would wait 10 s and kill.
  for (const signal of ['SIGTERM', 'SIGINT']) {
    process.on(signal, () => process.exit(0));
  }
  require('/opt/pouchdb-server/node_modules/pouchdb-server/bin/pouchdb-server');
}

if (require.main === module) {
  startContainerServer();
}
