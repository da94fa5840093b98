import { afterSignIn, currentSession, devLogin } from "./session.js";

if (currentSession()) location.replace(afterSignIn());

const form = document.getElementById("signin");
const status = document.getElementById("status");
form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  status.textContent = "Signing in…";
  try {
    await devLogin(form.elements.name.value);
    location.assign(afterSignIn());
  } catch (err) {
    status.textContent = err.status === 404
      ? "The development login is disabled on this server (ROOMLOG_API_DEV_MODE=true enables it)."
      : `Sign-in failed: ${err.detail ?? err.message}`;
  }
});
