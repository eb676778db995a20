// Sign in, or create a tenant where the server allows open registration.
import { register, sessionOptions, signIn } from "../api.js";
import { clear, explainError, field, h } from "../dom.js";

export async function render(view, ctx) {
  const options = await sessionOptions().catch(() => ({ registration_open: false }));
  const box = h("section", { class: "panel signin" });
  view.append(box);
  const show = (mode) => clear(box, mode === "register" ? registerForm(ctx, show) : signInForm(ctx, show, options));
  show("signin");
}

function errorLine() {
  return h("p", { class: "error", role: "alert", hidden: true });
}

// Submits through ``action``; its error goes in words into ``line``.
function onSubmit(form, submit, line, action) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    try {
      await action();
    } catch (error) {
      line.textContent = explainError(error);
      line.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

function signInForm(ctx, show, options) {
  const email = h("input", { type: "email", name: "email", required: true, autocomplete: "username", autofocus: true });
  const password = h("input", { type: "password", name: "password", required: true, autocomplete: "current-password" });
  const error = errorLine();
  const submit = h("button", { type: "submit" }, "Sign in");
  const form = h("form", { id: "signin-form" },
    h("h1", {}, "Sign in to ragd"),
    field("Email", email), field("Password", password), error,
    h("div", { class: "row" }, submit,
      options.registration_open
        ? h("button", { type: "button", class: "link", onclick: () => show("register") }, "Create a tenant")
        : null));
  return onSubmit(form, submit, error, async () => {
    await signIn(email.value, password.value);
    await ctx.signedIn();
  });
}

function registerForm(ctx, show) {
  const email = h("input", { type: "email", name: "email", required: true, autocomplete: "username" });
  const password = h("input", { type: "password", name: "password", required: true, autocomplete: "new-password" });
  const tenant = h("input", { type: "text", name: "tenant_name", required: true, maxlength: 100 });
  const error = errorLine();
  const submit = h("button", { type: "submit" }, "Create tenant");
  const form = h("form", { id: "register-form" },
    h("h1", {}, "Create a tenant"),
    h("p", { class: "muted" }, "You become its administrator."),
    field("Email", email), field("Password", password, "Long and not a common password (the server checks its strength)."),
    field("Tenant name", tenant, "Your team or organisation."), error,
    h("div", { class: "row" }, submit,
      h("button", { type: "button", class: "link", onclick: () => show("signin") }, "I have an account")));
  return onSubmit(form, submit, error, async () => {
    await register(email.value, password.value, tenant.value);
    await ctx.signedIn();
  });
}
