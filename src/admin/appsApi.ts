// Apps on the admin listener (issue 5):
//   GET    /v1/apps          every app: name, hostnames, Machines, connections
//   POST   /v1/apps          deploy {"name"?: string, "config": "<app file TOML>"}
//   GET    /v1/apps/{app}    show: summary, hostnames, Machines count and the stored TOML text
//   DELETE /v1/apps/{app}    destroy
// Paths and request bodies are checked here; what deploy, show and destroy mean depends on the
// store, so the backend answers them: the embedded store refuses writes (app files are the
// config, see appsEmbedded.ts), the cluster store writes to and reads from the shared store.

import type { AppConfig, ConfigError } from '../config/types.ts';
import { apiError, jsonObject, type ApiReply } from './machinesApi.ts';

export interface AppsBackend {
  /** `GET /v1/apps`: one summary object per app (name, hostnames, machines, connections). */
  apps(): unknown[];
  /**
   * `POST /v1/apps`: validate `text` with the app loader (parseAppConfig, then the rules across
   * apps) and store it. 201 with the app's summary when the app is new, 200 when it replaced
   * one; 422 PA19 (`appFileError`) for an invalid file, or when `name` is given and the file's
   * `app` is another; 409 PA18 with the embedded store; 503 PA17 when the store is out.
   */
  deployApp(text: string, name?: string): Promise<ApiReply>;
  /** `GET /v1/apps/{app}`: 200 `AppSummary` plus `config` (the TOML text); 404 PA02 for no such app. */
  showApp(name: string): Promise<ApiReply>;
  /** `DELETE /v1/apps/{app}`: 200 when gone; 404 PA02; 409 PA18 with the embedded store; 503 PA17. */
  destroyApp(name: string): Promise<ApiReply>;
}

/** The fields every app answer carries; backends add their own (store, file, revision...). */
export interface AppSummary {
  readonly name: string;
  readonly hostnames: readonly string[];
  readonly machines: number;
  readonly primary_region: string;
}

export function appSummary(app: AppConfig): AppSummary {
  return { name: app.name, hostnames: app.hostnames, machines: app.machines.length, primary_region: app.primaryRegion };
}

/** 422 PA19: where the app file is wrong, in the same fields as a refused reload. */
export function appFileError(err: ConfigError): ApiReply {
  return { status: 422, body: { error: { code: 'PA19', reason: err.message, file: err.file, key: err.key, line: err.line } } };
}

const LIST = /^\/v1\/apps$/;
const ONE = /^\/v1\/apps\/([^/]+)$/;

/** Methods an apps path takes, or null when the path is not one of these. */
export function appRouteMethods(path: string): readonly string[] | null {
  if (LIST.test(path)) return ['GET', 'HEAD', 'POST'];
  if (ONE.test(path)) return ['GET', 'HEAD', 'DELETE'];
  return null;
}

/** Handles an apps path (token already checked, method already allowed). */
export async function handleAppRoute(method: string, path: string, rawBody: string, backend: AppsBackend): Promise<ApiReply> {
  if (LIST.test(path)) {
    if (method !== 'POST') return { status: 200, body: backend.apps() };
    const read = jsonObject(rawBody);
    if (read.error !== null) return read.error;
    const { config, name } = read.body;
    if (typeof config !== 'string' || config.trim() === '') return apiError(400, 'PA08', 'config is required: the app file\'s TOML text as a string');
    if (name !== undefined && (typeof name !== 'string' || name === '')) return apiError(400, 'PA08', 'name must be a non-empty string when given');
    return backend.deployApp(config, name);
  }
  const name = decodeName(ONE.exec(path)![1]!);
  // A name that does not even decode cannot be an app's.
  if (name === null) return apiError(404, 'PA02', `no app ${ONE.exec(path)![1]!}`);
  return method === 'DELETE' ? backend.destroyApp(name) : backend.showApp(name);
}

function decodeName(segment: string): string | null {
  try {
    return decodeURIComponent(segment);
  } catch {
    return null;
  }
}
