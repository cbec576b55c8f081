// The apps API with the embedded store: the files in apps_dir are the config, so deploy and
// destroy are refused (409 PA18, naming the directory) rather than written somewhere a reload
// would not read; show answers from the applied config and the app file as it is on disk now.

import { readFile } from 'node:fs/promises';
import type { Config } from '../config/types.ts';
import { appSummary, type AppsBackend } from './appsApi.ts';
import { apiError, type ApiReply } from './machinesApi.ts';

export type EmbeddedAppsBackend = Pick<AppsBackend, 'deployApp' | 'showApp' | 'destroyApp'>;

/** `config` returns the applied config (it changes with every reload). */
export function embeddedAppsBackend(config: () => Config): EmbeddedAppsBackend {
  const filesRule = (): string => `the embedded store reads app files from ${config().node.appsDir}`;
  return {
    deployApp: () => Promise.resolve(apiError(409, 'PA18', `${filesRule()}: edit the file there and reload`)),
    destroyApp: (name) => {
      const app = config().apps.get(name);
      if (app === undefined) return Promise.resolve(apiError(404, 'PA02', `no app ${name}`));
      return Promise.resolve(apiError(409, 'PA18', `${filesRule()}: remove ${app.file} and reload`));
    },
    showApp: async (name): Promise<ApiReply> => {
      const app = config().apps.get(name);
      if (app === undefined) return apiError(404, 'PA02', `no app ${name}`);
      const base = { ...appSummary(app), store: 'embedded', file: app.file };
      try {
        return { status: 200, body: { ...base, config: await readFile(app.file, 'utf8') } };
      } catch (err) {
        // The app still serves from the last reload; say why its text is missing instead of
        // failing the whole answer.
        const code = (err as NodeJS.ErrnoException).code ?? String(err);
        return { status: 200, body: { ...base, config: null, config_error: `cannot read ${app.file} (${code})` } };
      }
    },
  };
}
