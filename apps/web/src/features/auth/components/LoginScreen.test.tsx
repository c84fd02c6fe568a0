import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, expect, it, vi } from "vitest";
import { LoginScreen } from "./LoginScreen";

afterEach(() => vi.unstubAllGlobals());

function answer(status: number, body: unknown) {
  vi.stubGlobal(
    "fetch",
    vi.fn(async () => new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } })),
  );
}

it("names its controls as the e2e tests find them", () => {
  render(<LoginScreen onSignedIn={() => undefined} />);
  expect(screen.getByRole("heading", { level: 1, name: "kuno" })).toBeTruthy();
  expect(screen.getByLabelText("Username")).toBeTruthy();
  expect(screen.getByLabelText("Password")).toBeTruthy();
  for (const name of ["Log in", "Register", "Import key"]) {
    expect(screen.getByRole("button", { name })).toBeTruthy();
  }
});

it.each([
  [401, { error: "invalid_credentials", reason: "wrong username or password" }, "Log in", "Wrong username or password"],
  [409, { error: "username_taken", reason: "this username is taken" }, "Register", "Username already taken"],
  [429, { error: "too_many_requests", reason: "too many attempts" }, "Log in", "Too many attempts; try again in a moment"],
])("a %i reads as words in the alert", async (status, body, button, text) => {
  answer(status, body);
  const user = userEvent.setup();
  const signedIn = vi.fn();
  render(<LoginScreen onSignedIn={signedIn} />);
  await user.type(screen.getByLabelText("Username"), "alice");
  await user.type(screen.getByLabelText("Password"), "password123");
  await user.click(screen.getByRole("button", { name: button }));
  expect(await screen.findByText(text)).toBeTruthy();
  expect(screen.getByRole("alert").textContent).toBe(text);
  expect(signedIn).not.toHaveBeenCalled();
});

it("the master out of reach reads 'Cannot reach the server'", async () => {
  vi.stubGlobal("fetch", vi.fn(async () => Promise.reject(new TypeError("Failed to fetch"))));
  const user = userEvent.setup();
  render(<LoginScreen onSignedIn={() => undefined} />);
  await user.type(screen.getByLabelText("Username"), "alice");
  await user.type(screen.getByLabelText("Password"), "password123{Enter}");
  expect(await screen.findByText("Cannot reach the server")).toBeTruthy();
});

it("Import key opens the Key file input", async () => {
  const user = userEvent.setup();
  render(<LoginScreen onSignedIn={() => undefined} />);
  expect(screen.queryByLabelText("Key file")).toBeNull();
  await user.click(screen.getByRole("button", { name: "Import key" }));
  expect(screen.getByLabelText("Key file")).toBeTruthy();
});
