#!/usr/bin/env node
// SPDX-License-Identifier: MPL-2.0
// Plays an HLS playlist with hls.js in headless Chromium and prints, as one JSON object, what the
// player did: frames decoded and dropped (getVideoPlaybackQuality), hls.js errors, media errors,
// stalls, and whether playback reached the end. Test support for gopswarm; nothing here is
// shipped. Run by hand:
//
//   npm ci --prefix tests/player
//   node tests/player/play.mjs --root out/qa --playlist synthetic-720p25-swarm-hls/index.m3u8
//
// The files are served from --root on a loopback port of our own; Chromium reaches nothing else.
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import puppeteer from 'puppeteer-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const HLS_JS = path.join(HERE, 'node_modules', 'hls.js', 'dist', 'hls.min.js');
const PAGE = path.join(HERE, 'page.html');

const USAGE = `usage: play.mjs --root DIR --playlist PATH [--timeout SECONDS] [--chromium PATH] [--live]
  --root DIR         folder served over HTTP on 127.0.0.1 (the playlist and its segments)
  --playlist PATH    playlist path under --root, e.g. out-hls/index.m3u8
  --timeout SECONDS  give up this long after loading (default: 180)
  --chromium PATH    Chromium binary (default: $CHROMIUM or /usr/bin/chromium)
  --live             hls.js lowLatencyMode and live sync (default: VOD-style playback to the end)`;

function parseArgs(argv) {
  const opts = { timeout: 180, chromium: process.env.CHROMIUM || '/usr/bin/chromium', live: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--root') opts.root = value();
    else if (a === '--playlist') opts.playlist = value();
    else if (a === '--timeout') opts.timeout = Number(value());
    else if (a === '--chromium') opts.chromium = value();
    else if (a === '--live') opts.live = true;
    else if (a === '--help' || a === '-h') {
      console.log(USAGE);
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  if (!opts.root || !opts.playlist) throw new Error('--root and --playlist are required');
  if (!Number.isFinite(opts.timeout) || opts.timeout <= 0) throw new Error('--timeout must be a positive number');
  const file = path.join(opts.root, opts.playlist);
  if (!fs.existsSync(file)) throw new Error(`no playlist at ${file}`);
  if (!fs.existsSync(opts.chromium)) throw new Error(`no Chromium at ${opts.chromium} (apt-get install chromium)`);
  if (!fs.existsSync(HLS_JS)) throw new Error(`hls.js missing: run npm ci --prefix ${HERE}`);
  return opts;
}

const TYPES = {
  '.m3u8': 'application/vnd.apple.mpegurl',
  '.ts': 'video/mp2t',
  '.m4s': 'video/iso.segment',
  '.mp4': 'video/mp4',
  '.aac': 'audio/aac',
  '.js': 'text/javascript',
  '.html': 'text/html',
};

// A static file server for the playlist folder, plus the page and hls.js under /__player/.
function serve(root) {
  const rootAbs = path.resolve(root);
  const server = http.createServer((req, res) => {
    let pathname;
    try {
      pathname = decodeURIComponent(new URL(req.url, 'http://127.0.0.1').pathname);
    } catch {
      res.writeHead(400).end();
      return;
    }
    let file;
    if (pathname === '/__player/page.html') file = PAGE;
    else if (pathname === '/__player/hls.min.js') file = HLS_JS;
    else if (pathname === '/favicon.ico') {
      res.writeHead(204).end();
      return;
    } else {
      file = path.resolve(rootAbs, '.' + pathname);
      if (!file.startsWith(rootAbs + path.sep)) {
        res.writeHead(403).end();
        return;
      }
    }
    fs.readFile(file, (err, data) => {
      if (err) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, {
        'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream',
        'Cache-Control': 'no-store',
      });
      res.end(data);
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const server = await serve(opts.root);
  const port = server.address().port;
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'gopswarm-player-'));
  const browser = await puppeteer.launch({
    executablePath: opts.chromium,
    headless: true,
    userDataDir: profile,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-background-timer-throttling',
      '--disable-renderer-backgrounding',
      '--autoplay-policy=no-user-gesture-required',
    ],
  });
  const console_ = [];
  let result;
  try {
    const page = await browser.newPage();
    page.on('console', (m) => console_.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => console_.push(`pageerror: ${e.message}`));
    const src = `http://127.0.0.1:${port}/${opts.playlist.split('/').map(encodeURIComponent).join('/')}`;
    const pageUrl = `http://127.0.0.1:${port}/__player/page.html?src=${encodeURIComponent(src)}&live=${opts.live ? 1 : 0}`;
    await page.goto(pageUrl, { waitUntil: 'load' });
    const deadline = Date.now() + opts.timeout * 1000;
    let last = -1;
    for (;;) {
      const s = await page.evaluate(() => window.playerState());
      if (s.ended || s.fatal || Date.now() > deadline) {
        result = s;
        result.timedOut = !s.ended && !s.fatal;
        break;
      }
      if (Math.floor(s.currentTime / 10) !== last) {
        last = Math.floor(s.currentTime / 10);
        process.stderr.write(`[player] ${s.currentTime.toFixed(1)} s played, ${s.dropped} dropped of ${s.total}\n`);
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  } finally {
    await browser.close();
    server.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  result.console = console_.slice(-50);
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((e) => {
  console.error(`play.mjs: ${e.message}`);
  process.exit(2);
});
