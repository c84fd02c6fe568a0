/// <reference types="vitest/config" />
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// The dev server can stand in for the proxy: KUNO_MASTER (e.g. http://127.0.0.1:8080) gets
// /api and /ws, KUNO_NODES (comma-separated base URLs) become /node1, /node2, ...
const master = process.env.KUNO_MASTER;
const nodes = (process.env.KUNO_NODES ?? "").split(",").filter(Boolean);
const proxy: Record<string, object> = {};
if (master) {
  proxy["/api"] = { target: master, changeOrigin: true };
  proxy["/ws"] = { target: master.replace(/^http/, "ws"), ws: true, changeOrigin: true };
}
nodes.forEach((target, index) => {
  proxy[`/node${index + 1}`] = {
    target,
    changeOrigin: true,
    rewrite: (path: string) => path.replace(new RegExp(`^/node${index + 1}`), ""),
  };
});

export default defineConfig({
  plugins: [react()],
  build: {
    outDir: "dist",
    // Everything in files: the proxy's CSP allows no inline script or style.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
  },
  server: { proxy },
  test: {
    environment: "jsdom",
    include: ["src/**/*.test.{ts,tsx}"],
    setupFiles: ["src/test/setup.ts"],
  },
});
