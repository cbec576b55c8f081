// Certificate status and actions on the admin listener (issue 4):
//   GET    /v1/apps/{app}/certificates             every name of the app and its status
//   GET    /v1/apps/{app}/certificates/{hostname}  one name
//   DELETE /v1/apps/{app}/certificates/{hostname}  remove stored certificates (ACME orders anew)
//   POST   /v1/apps/{app}/certificates/acme        {"hostname": ...}: order now
//   POST   /v1/apps/{app}/certificates/custom      {"hostname", "certificate", "private_key"}: import
// Status: pending, active, failed (with the last error and the next retry), missing; issuer,
// expiry and source. The work is done by Certificates (src/tls/certificates.ts).

import type { AppConfig } from '../config/types.ts';
import { CertificateRequestError, type Certificates } from '../tls/certificates.ts';
import { apiError, jsonObject, type ApiReply } from './machinesApi.ts';

export interface CertificatesBackend {
  app(name: string): AppConfig | undefined;
  readonly certificates: Certificates;
}

const LIST = /^\/v1\/apps\/([^/]+)\/certificates$/;
const ONE = /^\/v1\/apps\/([^/]+)\/certificates\/([^/]+)$/;
/** PEM bundles are small; a limit keeps a bad client from making us parse megabytes. */
const MAX_PEM = 64 * 1024;

/** Methods a certificates path takes, or null when the path is not one of these. */
export function certificateRouteMethods(path: string): readonly string[] | null {
  if (LIST.test(path)) return ['GET', 'HEAD'];
  const m = ONE.exec(path);
  if (m === null) return null;
  return m[2] === 'acme' || m[2] === 'custom' ? ['POST', 'GET', 'HEAD', 'DELETE'] : ['GET', 'HEAD', 'DELETE'];
}

function stringField(body: Record<string, unknown>, key: string): string {
  const v = body[key];
  if (typeof v !== 'string' || v.trim() === '') throw new CertificateRequestError(400, 'PA08', `${key} is required and must be a non-empty string`);
  if (v.length > MAX_PEM) throw new CertificateRequestError(400, 'PA08', `${key} is longer than ${MAX_PEM} characters`);
  return v;
}

export async function handleCertificateRoute(method: string, path: string, rawBody: string, backend: CertificatesBackend): Promise<ApiReply> {
  const list = LIST.exec(path);
  const one = list === null ? ONE.exec(path)! : null;
  const appName = decodeURIComponent((list ?? one)![1]!);
  const app = backend.app(appName);
  if (app === undefined) return apiError(404, 'PA02', `no app ${appName}`);
  const certs = backend.certificates;
  try {
    if (list !== null) return { status: 200, body: certs.statusAll(app) };
    const name = decodeURIComponent(one![2]!);
    if (method === 'POST') {
      const read = jsonObject(rawBody);
      if (read.error !== null) return read.error;
      const hostname = stringField(read.body, 'hostname');
      if (name === 'acme') return { status: 202, body: certs.requestAcme(app, hostname) };
      await certs.importCustom(app, hostname, stringField(read.body, 'certificate'), stringField(read.body, 'private_key'));
      return { status: 201, body: certs.status(app, hostname.toLowerCase()) };
    }
    const hostname = certs.appHostname(app, name);
    if (method === 'DELETE') return { status: 200, body: { ok: true, ...(await certs.remove(app, hostname)) } };
    return { status: 200, body: certs.status(app, hostname) };
  } catch (err) {
    if (err instanceof CertificateRequestError) return apiError(err.status, err.code, err.message);
    throw err;
  }
}
