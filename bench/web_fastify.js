// fastify (from npm, installed by bench/web.sh): GET /users/:id returning a
// small JSON object. usage: NODE_PATH=... node web_fastify.js PORT
const fastify = require("fastify")({ logger: false });
fastify.get("/users/:id", async (request) => {
  const id = request.params.id;
  return { id: Number(id), name: "user " + id };
});
fastify.listen({ port: Number(process.argv[2]), host: "127.0.0.1" });
