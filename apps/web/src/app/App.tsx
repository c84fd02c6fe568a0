export function App() {
  return <h1>kuno</h1>;
}
