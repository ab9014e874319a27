// Validate glTF/GLB files with the Khronos glTF-Validator; print one JSON report per file.
// Usage: node validate_gltf.js FILE.glb [...]   -> stdout: [{file, validatorVersion, issues: {...}, messages: [...]}, ...]
// Exit code 0 whatever the findings (the Python test judges them); 2 when a file cannot be read.
"use strict";
const fs = require("fs");
const path = require("path");
const validator = require("gltf-validator");

async function main(files) {
  const reports = [];
  for (const file of files) {
    const bytes = new Uint8Array(fs.readFileSync(file));
    // maxIssues 0 = unlimited: an error must never hide behind a flood of infos.
    const report = await validator.validateBytes(bytes, { uri: path.basename(file), maxIssues: 0 });
    reports.push({ file, validatorVersion: report.validatorVersion, issues: report.issues, info: report.info });
  }
  process.stdout.write(JSON.stringify(reports));
}

main(process.argv.slice(2)).catch((err) => {
  console.error(String(err && err.stack || err));
  process.exit(2);
});
