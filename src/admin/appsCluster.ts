// The apps API with the cluster store: deploy validates the app file with the same loader as
// the embedded one (and against the other deployed apps) and writes it to the store, where every
// node picks it up; destroy removes it; show answers with the document as stored. A store that
// cannot be reached is a 503 with PA17, never a silent success.

import type { ClusterNode } from '../cluster/node.ts';
import { ConfigError, type Config } from '../config/types.ts';
import { isStoreError } from '../store/errors.ts';
import { appFileError, appSummary } from './appsApi.ts';
import type { EmbeddedAppsBackend } from './appsEmbedded.ts';
import { apiError, type ApiReply } from './machinesApi.ts';

function failure(err: unknown): ApiReply {
  if (err instanceof ConfigError) return appFileError(err);
  if (isStoreError(err)) return apiError(503, 'PA17', `cluster store: ${err.message}`);
  throw err;
}

export function clusterAppsBackend(cluster: ClusterNode, config: () => Config): EmbeddedAppsBackend {
  return {
    async deployApp(text, name): Promise<ApiReply> {
      try {
        const { app, created } = await cluster.deploy(text, name);
        return { status: created ? 201 : 200, body: { ...appSummary(app), store: 'nats' } };
      } catch (err) {
        return failure(err);
      }
    },
    async destroyApp(name): Promise<ApiReply> {
      try {
        if (!(await cluster.destroyApp(name))) return apiError(404, 'PA02', `no app ${name}`);
        return { status: 200, body: { ok: true, name } };
      } catch (err) {
        return failure(err);
      }
    },
    showApp(name): Promise<ApiReply> {
      const doc = cluster.appDoc(name);
      if (doc === undefined) return Promise.resolve(apiError(404, 'PA02', `no app ${name}`));
      const app = config().apps.get(name);
      const summary = app === undefined ? { name } : appSummary(app);
      return Promise.resolve({
        status: 200,
        body: {
          ...summary,
          store: 'nats',
          deployed_by: doc.deployedBy,
          deployed_at: new Date(doc.deployedAt).toISOString(),
          // Deployed but not served: another app's hostnames clash, or the file no longer loads here.
          serving: app !== undefined,
          config: doc.config,
        },
      });
    },
  };
}
