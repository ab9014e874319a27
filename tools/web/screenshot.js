// Screenshot a web page in the machine's headless Chromium (no browser is downloaded: playwright-core
// only drives the executable it is given). WebGL runs on SwiftShader, Chromium's CPU renderer.
// Usage: node screenshot.js URL OUT.png [--width 640] [--height 640] [--wait-ms 25000] [--chromium PATH]
// Prints the page's console lines as JSON on stdout: {console: [...], pageErrors: [...]}.
"use strict";
const { chromium } = require("playwright-core");

function option(args, name, fallback) {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
}

async function main(args) {
  const [url, out] = args;
  const width = Number(option(args, "--width", "640"));
  const height = Number(option(args, "--height", "640"));
  const waitMs = Number(option(args, "--wait-ms", "25000"));
  const executablePath = option(args, "--chromium", process.env.CHROMIUM || "/usr/bin/chromium");
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    // --no-sandbox: CI containers run as root, where Chromium's sandbox cannot start.
    args: ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"],
  });
  const log = { console: [], pageErrors: [] };
  try {
    const page = await browser.newPage({ viewport: { width, height }, deviceScaleFactor: 1 });
    page.on("console", (msg) => log.console.push(`${msg.type()}: ${msg.text()}`));
    page.on("pageerror", (err) => log.pageErrors.push(String(err)));
    await page.goto(url, { waitUntil: "load", timeout: 120000 });
    // The viewer decodes the embedded SOG and sorts the splats on the CPU after load; SwiftShader
    // draws slowly, so the shot waits a fixed time rather than racing the first frames.
    await page.waitForTimeout(waitMs);
    await page.screenshot({ path: out });
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(log));
}

main(process.argv.slice(2)).catch((err) => {
  console.error(String((err && err.stack) || err));
  process.exit(2);
});
