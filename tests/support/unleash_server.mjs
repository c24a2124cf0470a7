// Starts a real unleash-server for tests/test_flags.py: everything comes from environment variables
// (UNLEASH_DIR where it is installed, DATABASE_URL, UNLEASH_PORT, INIT_ADMIN_API_TOKENS), nothing leaves 127.0.0.1.
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const dir = process.env.UNLEASH_DIR;
const entry = createRequire(join(dir, 'package.json')).resolve('unleash-server');
const unleash = await import(pathToFileURL(entry).href);

await unleash.start({
    databaseUrl: process.env.DATABASE_URL,
    db: { ssl: false },
    server: { host: '127.0.0.1', port: Number(process.env.UNLEASH_PORT) },
    versionCheck: { enable: false },
    logLevel: unleash.LogLevel.warn,
});
