/// <reference types="vitest/config" />
import react from "@vitejs/plugin-react";
import { type Connect, type Plugin, defineConfig } from "vite";

// `npm run dev` / `npm run preview` can stand in for the proxy: KUNO_MASTER (e.g.
// http://127.0.0.1:8080) gets /api and /ws, KUNO_NODES (comma-separated base URLs) become
// /node1, /node2, ... and /config.json lists them. The preview sends the proxy's CSP.
const master = process.env.KUNO_MASTER;
const nodes = (process.env.KUNO_NODES ?? "").split(",").filter(Boolean);
const proxy: Record<string, object> = {};
if (master) {
  proxy["/api"] = { target: master, changeOrigin: true };
  proxy["/ws"] = { target: master.replace(/^http/, "ws"), ws: true, changeOrigin: true };
}
nodes.forEach((target, index) => {
  const prefix = `/node${index + 1}`;
  proxy[prefix] = {
    target,
    changeOrigin: true,
    rewrite: (path: string) => path.slice(prefix.length),
  };
});

export const CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; " +
  "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; " +
  "form-action 'self'; frame-ancestors 'none'";

function standInProxy(): Plugin {
  const middleware: Connect.NextHandleFunction = (request, response, next) => {
    if (request.url === "/config.json") {
      response.setHeader("Content-Type", "application/json");
      response.end(JSON.stringify({ nodes: nodes.map((_, i) => `/node${i + 1}`) }));
      return;
    }
    next();
  };
  return {
    name: "kuno-stand-in-proxy",
    configureServer: (server) => void server.middlewares.use(middleware),
    configurePreviewServer: (server) => {
      server.middlewares.use((_request, response, next) => {
        response.setHeader("Content-Security-Policy", CSP);
        next();
      });
      server.middlewares.use(middleware);
    },
  };
}

export default defineConfig({
  plugins: [react(), standInProxy()],
  build: {
    outDir: "dist",
    // Everything in files: the proxy's CSP allows no inline script or style.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
  },
  server: { proxy, host: "127.0.0.1" },
  preview: { proxy, host: "127.0.0.1" },
  test: {
    environment: "jsdom",
    include: ["src/**/*.test.{ts,tsx}"],
    setupFiles: ["src/test/setup.ts"],
  },
});
