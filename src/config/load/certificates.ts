// `[[certificates]]` of an app file: names the app answers through one of its wildcard hostnames
// that need a certificate of their own (a wildcard hostname gets none from ACME, which could only
// issue a wildcard over DNS-01). Across apps, acrossApps.ts makes sure one name is listed once.

import type { CertificateConfig } from '../types.ts';
import type { Section } from './section.ts';
import { isHostname } from './valueRules.ts';

/**
 * `hostnamePaths`: the app's hostnames (lower-case, with `<app>.<default_domain>`) → key path
 * where each was declared, so that an error can point at it.
 */
export function readCertificates(sections: readonly Section[], hostnamePaths: ReadonlyMap<string, string>): CertificateConfig[] {
  const lines = new Map<string, number>();
  return sections.map((s) => {
    const written = s.require('hostname', s.string('hostname'));
    const hostname = written.toLowerCase();
    const wildcard = hostname.startsWith('*.');
    if (!isHostname(wildcard ? hostname.slice(2) : hostname)) {
      s.fail('hostname', `${JSON.stringify(written)} is not a host name (a leading "*." wildcard is allowed)`);
    }
    const acme = s.boolean('acme') ?? true;
    s.finish();
    if (wildcard && acme) {
      s.fail(
        'acme',
        `${JSON.stringify(hostname)} is a wildcard: set acme = false and import its certificate into the node's certs_dir ` +
          '(an ACME CA issues wildcards only over the DNS-01 challenge, which petrel does not do)',
      );
    }
    checkAnswered(s, hostname, hostnamePaths);
    const first = lines.get(hostname);
    if (first !== undefined) s.fail('hostname', `${JSON.stringify(hostname)} is listed twice (first on line ${first})`);
    lines.set(hostname, s.lineOf(s.at('hostname')));
    return { hostname, acme, source: s.source() };
  });
}

/**
 * The name must be one the app answers: routing would send it to another app, or nowhere, and a
 * certificate for it would never be served. A plain name must come through a wildcard hostname
 * one label deep (RFC 6125 §6.4.3), because a plain hostname already gets a certificate; a
 * wildcard name must be one of the app's wildcard hostnames (nothing covers it otherwise).
 */
function checkAnswered(s: Section, hostname: string, hostnamePaths: ReadonlyMap<string, string>): void {
  const exact = hostnamePaths.get(hostname);
  if (hostname.startsWith('*.')) {
    if (exact !== undefined) return;
  } else {
    if (exact !== undefined) {
      // `app`: the derived <app>.<default_domain>, which no line declares by name.
      const where = exact === 'app' ? 'as <app>.<default_domain>' : `${exact}, line ${s.lineOf(exact)}`;
      s.fail(
        'hostname',
        `${JSON.stringify(hostname)} is already in this app's hostnames (${where}), and every hostname ` +
          'already gets a certificate; list here only names the app answers through a "*." wildcard hostname',
      );
    }
    const dot = hostname.indexOf('.');
    if (dot !== -1 && hostnamePaths.has(`*${hostname.slice(dot)}`)) return;
  }
  s.fail(
    'hostname',
    `${JSON.stringify(hostname)} is not one of this app's hostnames (${[...hostnamePaths.keys()].join(', ')}), ` +
      'nor one label under one of its "*." wildcards',
  );
}
