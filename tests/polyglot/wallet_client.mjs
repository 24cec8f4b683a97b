// A Node.js client of the wallet service, as a polyglot backend would write it:
// @grpc/grpc-js + @grpc/proto-loader, loading the .proto files in protos/.
//
// Usage: node wallet_client.mjs <target> <api-key> <external-id> <include-dir>...
// The include dirs resolve imports: protos/ itself, buf/validate/validate.proto, the
// google/protobuf and google/rpc files. Prints one JSON object with what it observed; the
// pytest test asserts on it.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [target, apiKey, externalId, ...includeDirs] = process.argv.slice(2);

const definition = protoLoader.loadSync("obol/wallet/v1/wallet.proto", {
  includeDirs,
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const walletPackage = grpc.loadPackageDefinition(definition).obol.wallet.v1;
const client = new walletPackage.WalletService(target, grpc.credentials.createInsecure());

function call(method, request) {
  const metadata = new grpc.Metadata();
  metadata.set("x-api-key", apiKey);
  const deadline = new Date(Date.now() + 10_000);
  return new Promise((resolve) => {
    client[method](request, metadata, { deadline }, (error, response) => {
      resolve(error ? { error: { code: error.code, details: error.details } } : { response });
    });
  });
}

const created = await call("CreateCustomer", {
  request_id: `node-${externalId}`,
  customer: { external_id: externalId, display_name: "Node client", metadata: { lang: "js" } },
});
const fetched = await call("GetCustomer", { external_id: externalId });
const invalid = await call("CreateCustomer", {
  request_id: "",
  customer: { external_id: externalId },
});
client.close();
console.log(JSON.stringify({ created, fetched, invalid }));
