// Usage: node search_client.js HOST:PORT IMAGE_FILE [LIMIT]
// Loads proto/imgsearch/v1/searcher.proto at run time (no generated code) and prints the
// SearchResponse as JSON, or the gRPC error as {"code": ..., "details": ...} with exit code 1.
"use strict";
const fs = require("fs");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [target, imageFile, limit] = process.argv.slice(2);
if (!target || !imageFile) {
  console.error("usage: node search_client.js HOST:PORT IMAGE_FILE [LIMIT]");
  process.exit(2);
}

const protoRoot = path.resolve(__dirname, "..", "..", "proto");
const definition = protoLoader.loadSync("imgsearch/v1/searcher.proto", {
  includeDirs: [protoRoot],
  keepCase: true,
  longs: String,
  defaults: true,
  oneofs: true,
});
const { Searcher } = grpc.loadPackageDefinition(definition).imgsearch.v1;
const client = new Searcher(target, grpc.credentials.createInsecure());
const request = { image: fs.readFileSync(imageFile), limit: Number(limit || 0) };
const deadline = new Date(Date.now() + 30000);

client.Search(request, { deadline }, (err, response) => {
  client.close();
  if (err) {
    console.log(JSON.stringify({ code: grpc.status[err.code], details: err.details }));
    process.exit(1);
  }
  console.log(JSON.stringify(response));
});
