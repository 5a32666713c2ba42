// Fetches each URL of its `urls` input (one per line) and reports, per URL, the status
// and the start of the body, or why the request failed: the probe the tests run against
// the outbound-HTTP policy (what a plug-in may reach, and within which limits).
import { Output, plugin, trace } from 'sluice-sdk';

async function probe(url) {
  try {
    const response = await fetch(url, { redirect: 'manual' });
    const body = await response.text();
    return `${response.status} ${body.slice(0, 64)}`;
  } catch (error) {
    return `error: ${error?.message ?? error}`;
  }
}

export const handler = plugin(async (ctx) => {
  const urls = String(ctx.inputParameters.urls ?? '').split('\n').filter(Boolean);
  const output = new Output();
  for (const [i, url] of urls.entries()) {
    const result = await probe(url);
    trace(`${url} -> ${result}`);
    output.set(`r${i}`, result);
  }
  return output;
});
