mod codec;
mod measure;

fn main() {
    procspawn::init();
    let r = codec::run(std::env::args().any(|a| a == "--quick"));
    println!("{}", serde_json::to_string_pretty(&r).unwrap());
}
