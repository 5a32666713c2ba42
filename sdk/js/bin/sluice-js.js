#!/usr/bin/env node
// `sluice-js build APP.js -o APP.wasm`: bundles the plug-in with the SDK into one module
// (rolldown; the host's interfaces stay imports) and builds it with componentize-js
// against Sluice's WIT world, shipped in this package.

import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const sdk = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const usage = 'usage: sluice-js build APP.js [-o APP.wasm]';

export async function build(app, output) {
  const { build: bundle } = await import('rolldown');
  const { componentize } = await import('@bytecodealliance/componentize-js');
  const work = await mkdtemp(path.join(tmpdir(), 'sluice-js-'));
  try {
    const entry = path.join(work, 'entry.js');
    // The component's host comes first: the plug-in's calls need it when they run.
    await writeFile(
      entry,
      `import ${JSON.stringify(path.join(sdk, 'src', 'component.js'))};\n` +
        `export { handler } from ${JSON.stringify(path.resolve(app))};\n`,
    );
    const bundled = path.join(work, 'bundle.js');
    await bundle({
      input: entry,
      external: [/^(sluice|wasi):/],
      resolve: { alias: { 'sluice-sdk': path.join(sdk, 'src', 'index.js') } },
      output: { file: bundled, format: 'esm' },
      logLevel: 'warn',
    });
    const { component } = await componentize({ sourcePath: bundled, witPath: path.join(sdk, 'wit'), worldName: 'plugin' });
    await writeFile(output, component);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function main(argv) {
  const { positionals, values } = parseArgs({ args: argv, allowPositionals: true, options: { output: { type: 'string', short: 'o' } } });
  const [command, app] = positionals;
  if (command !== 'build' || !app) {
    console.error(usage);
    return 2;
  }
  const output = values.output ?? app.replace(/\.[cm]?[jt]s$/, '') + '.wasm';
  try {
    await build(app, output);
  } catch (error) {
    console.error(`error: ${error?.message ?? error}`);
    return 1;
  }
  console.log(`built ${output} (${(await stat(output)).size.toLocaleString('en')} bytes); check it with: sluice plugin check ${output}`);
  return 0;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  process.exitCode = await main(process.argv.slice(2));
}
