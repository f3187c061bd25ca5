// Evaluates MCP flags with the official Node Unleash SDK (npm `unleash-client`) against a live portal.
// stdin: {"url": "<portal>/api/", "token": "mcpgov_…", "flags": [name, …], "contexts": [ctx, …]}
// stdout: [[isEnabled(flag, ctx) for each flag] for each ctx] as JSON.
'use strict';
const { initialize, InMemStorageProvider } = require('unleash-client');

let input = '';
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => {
  const { url, token, flags, contexts } = JSON.parse(input);
  const client = initialize({
    url,
    appName: 'mcp-governance-check',
    instanceId: `node-check-${process.pid}`,
    customHeaders: { Authorization: token },
    disableMetrics: true,
    refreshInterval: 60000,
    storageProvider: new InMemStorageProvider(),
  });
  const timer = setTimeout(() => { console.error('not synchronized in time'); process.exit(2); }, 20000);
  client.on('error', (err) => { console.error(String(err)); });
  client.on('synchronized', () => {
    clearTimeout(timer);
    const answers = contexts.map((ctx) => flags.map((name) => client.isEnabled(name, ctx, false)));
    process.stdout.write(JSON.stringify(answers));
    client.destroy();
    process.exit(0);
  });
});
